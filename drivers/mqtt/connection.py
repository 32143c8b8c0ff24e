"""One MQTT connection per broker, shared by every device that reads from it.

paho-mqtt runs its network loop in its own thread. That thread only does
cheap work: it stamps each message with its arrival time, routes it to the
subscriptions whose filter matches (exact topics through a dict, wildcards
with paho's matcher) and queues it. The asyncio loop drains the queue in
batches (one ``call_soon_threadsafe`` per batch, not per message) and the
devices parse there, so ``Context.emit`` is always called on the event loop.

Sessions: the first connection of the process starts clean (subscriptions a
previous configuration left on the broker are dropped), later reconnects
resume the session, so QoS 1 messages published while the link was down
(a door opened during a network blip) are delivered when it comes back.
MQTT 5 sessions expire on the broker :data:`SESSION_EXPIRY` after a drop.
Every reconnect re-subscribes, and the broker then resends retained messages:
the current state.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import logging
import socket
import ssl
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from roomwatch.core.tls import client_context

__all__ = ["BrokerConnection", "BrokerSettings", "Subscription", "parse_broker_url"]

log = logging.getLogger("roomwatch.driver.mqtt")

SESSION_EXPIRY = 3600  # s the broker keeps an MQTT 5 session (and queues QoS 1 messages) after a drop
RECONNECT_MIN, RECONNECT_MAX = 1, 30  # s; paho doubles the delay after each failed attempt
DOWN_GRACE = 15.0  # s unreachable before devices are reported down (a broker restart takes ~1 s)
MAX_PENDING = 5_000  # messages queued for the event loop; beyond, paho's thread waits (TCP back-pressure)
DRAIN_BATCH = 500  # messages parsed per event-loop callback (~15 ms), so a burst never stalls the loop
OVERLOAD_WAIT = 10.0  # s the network thread waits for room before dropping a message as "overload"
MAX_PAYLOAD_QUEUED = 64 * 1024  # bigger payloads are not queued (the device counts them too_large)

#: Called on the event loop: (topic, payload or None when too large, payload size, retained, arrival time).
Deliver = Callable[[str, "bytes | None", int, bool, float], None]


def parse_broker_url(url: str) -> tuple[str, str, int]:
    """``mqtt://host[:port]`` / ``mqtts://host[:port]`` → (scheme, host, port); ValueError when malformed."""
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ValueError(f"{url!r} must start with mqtt:// or mqtts://")
    if not parts.hostname:
        raise ValueError(f"{url!r} has no host name")
    if parts.username or parts.password:
        raise ValueError("put the user name and password in the username and password keys, not in the URL")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"{url!r}: an MQTT broker URL has no path or query")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{url!r} has an invalid port") from None
    return parts.scheme, parts.hostname, port or (8883 if parts.scheme == "mqtts" else 1883)


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    """Everything that makes two devices' connections the same one (the shared-connection key)."""

    url: str
    username: str | None = None
    password: str | None = None
    protocol: str = "3.1.1"  # or "5"
    client_id: str | None = None
    keepalive: int = 60
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure_skip_verify: bool = False

    def default_client_id(self) -> str:
        """Stable for one agent (same host, same command line), different between agents on one host."""
        seed = "|".join([self.url, self.username or "", self.protocol, self.ca_file or "", self.cert_file or "",
                         str(self.insecure_skip_verify), *sys.argv])
        digest = hashlib.sha1(seed.encode(), usedforsecurity=False).hexdigest()[:10]
        return f"roomwatch-{socket.gethostname().split('.')[0][:40]}-{digest}"


@dataclass(eq=False, slots=True)
class Subscription:
    """One device's topic filter on a connection."""

    topic: str
    qos: int
    deliver: Deliver
    dropped: int = 0  # messages dropped before parsing because the loop fell behind (network thread writes)


@dataclass(slots=True)
class _State:
    connected: bool = False
    ever_connected: bool = False
    down_since: float = field(default_factory=time.monotonic)
    last_error: str = "not connected yet"
    connects: int = 0
    #: SUBSCRIBE packets sent and SUBACKs received: equal (and connected) = every filter is live on the broker.
    subscribes: int = 0
    subacks: int = 0


class BrokerConnection:
    """A paho client in its own thread, multiplexing subscriptions to devices by topic."""

    def __init__(self, settings: BrokerSettings):
        self.settings = settings
        self.scheme, self.host, self.port = parse_broker_url(settings.url)
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)  # signalled when the loop has drained the queue
        self._subs: list[Subscription] = []
        self._exact: dict[str, list[Subscription]] = {}
        self._wild: list[Subscription] = []
        self._route_cache: dict[str, list[Subscription]] = {}
        self._pending: collections.deque[tuple[list[Subscription], str, bytes | None, int, bool, float]] = collections.deque()
        self._drain_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: Any = None
        self.state = _State()
        self.unmatched = 0  # messages no subscription wanted (left over from an old session)
        self._unmatched_logged = 0.0

    # -- subscriptions (event loop) -------------------------------------------------
    def add(self, sub: Subscription) -> None:
        """Route messages matching ``sub.topic`` to ``sub.deliver``; subscribes at once when connected."""
        with self._lock:
            self._subs.append(sub)
            self._reindex()
            connected = self.state.connected
        if connected and self._client is not None:
            self._subscribe([(sub.topic, sub.qos)])

    def remove(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)
                self._reindex()

    def _reindex(self) -> None:
        self._exact, self._wild, self._route_cache = {}, [], {}
        for s in self._subs:
            if "+" in s.topic or "#" in s.topic:
                self._wild.append(s)
            else:
                self._exact.setdefault(s.topic, []).append(s)

    def _filters(self) -> list[tuple[str, int]]:
        # In the order the devices added them, not sorted: the broker sends retained messages in
        # filter order, and a device adds its availability topic before its state topic.
        wanted: dict[str, int] = {}
        for s in self._subs:
            wanted[s.topic] = max(wanted.get(s.topic, 0), s.qos)
        return list(wanted.items())

    def _route(self, topic: str) -> list[Subscription]:
        """Subscriptions matching ``topic`` (network thread, under the lock)."""
        found = self._route_cache.get(topic)
        if found is None:
            from paho.mqtt.client import topic_matches_sub

            found = list(self._exact.get(topic, ()))
            found.extend(s for s in self._wild if topic_matches_sub(s.topic, topic))
            if len(self._route_cache) > 10_000:  # bounded: wildcards may see many topics
                self._route_cache.clear()
            self._route_cache[topic] = found
        return found

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> None:
        """Create the client and start connecting in the background (idempotent; call on the loop)."""
        if self._client is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._client = self._make_client()
        self._client.connect_async(self.host, self.port, keepalive=self.settings.keepalive,
                                   **self._connect_kwargs())
        self._client.loop_start()

    def _make_client(self) -> Any:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        s = self.settings
        v5 = s.protocol == "5"
        kwargs: dict[str, Any] = {"client_id": s.client_id or s.default_client_id(),
                                  "protocol": mqtt.MQTTv5 if v5 else mqtt.MQTTv311}
        if not v5:
            kwargs["clean_session"] = True  # first connect clean; see _on_connect
        client = mqtt.Client(CallbackAPIVersion.VERSION2, **kwargs)
        # paho's own logger stays off: it reports every failed reconnect; we log state changes once.
        client.reconnect_delay_set(RECONNECT_MIN, RECONNECT_MAX)
        if s.username is not None:
            client.username_pw_set(s.username, s.password)
        if self.scheme == "mqtts":
            client.tls_set_context(self._ssl_context())
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_connect_fail = self._on_connect_fail
        client.on_message = self._on_message
        return client

    def _connect_kwargs(self) -> dict[str, Any]:
        if self.settings.protocol != "5":
            return {}
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho-mqtt leaves it unannotated
        props.SessionExpiryInterval = SESSION_EXPIRY
        return {"properties": props}

    def _ssl_context(self) -> ssl.SSLContext:
        s = self.settings
        return client_context(s.ca_file, s.cert_file, s.key_file, s.insecure_skip_verify)

    async def aclose(self) -> None:
        """Disconnect and stop the network thread (called once by the agent at shutdown)."""
        client, self._client = self._client, None
        if client is None:
            return
        client.on_message = None
        await asyncio.to_thread(self._stop_client, client)

    @staticmethod
    def _stop_client(client: Any) -> None:
        try:
            client.disconnect()
        finally:
            client.loop_stop()

    def publish(self, topic: str, payload: bytes | str, qos: int = 0) -> bool:
        """Send one message (``roomwatch discover`` asks Tasmota boards for their sensors); False when not connected."""
        client = self._client
        if client is None or not self.state.connected:
            return False
        return bool(client.publish(topic, payload, qos=qos).rc == 0)

    # -- health ---------------------------------------------------------------------
    def problem(self) -> str | None:
        """Why messages cannot arrive now, once the broker has been unreachable past :data:`DOWN_GRACE`."""
        st = self.state
        if st.connected or time.monotonic() - st.down_since < DOWN_GRACE:
            return None
        return f"MQTT broker {self.settings.url} unreachable: {st.last_error}"

    # -- paho callbacks (network thread: never raise, never block) ---------------------
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        try:
            if reason_code.is_failure:
                self._mark_down(f"broker refused the connection: {reason_code}")
                return
            with self._lock:
                first = not self.state.ever_connected
                self.state.connected = self.state.ever_connected = True
                self.state.connects += 1
                self.state.subscribes = self.state.subacks = 0  # a new connection: earlier SUBACKs mean nothing
                filters = self._filters()
            if first and self.settings.protocol != "5" and hasattr(client, "_clean_session"):
                # MQTT 3.1.1 has no "clean start first time only" (paho offers it for 5 only): the first
                # CONNECT wiped a stale session; from now on keep the session across reconnects.
                client._clean_session = False
            if filters:
                self._subscribe(filters)
            log.info("connected to MQTT broker %s (%d subscriptions%s)", self.settings.url, len(filters),
                     ", session resumed" if getattr(flags, "session_present", False) else "")
        except Exception:  # an exception here would kill paho's network thread
            log.exception("MQTT on_connect")

    def _subscribe(self, filters: list[tuple[str, int]]) -> None:
        client = self._client
        if client is None:
            return
        with self._lock:
            self.state.subscribes += 1
        if self.settings.protocol == "5":
            from paho.mqtt.subscribeoptions import SubscribeOptions

            client.subscribe([(t, SubscribeOptions(qos=q)) for t, q in filters])
        else:
            client.subscribe(filters)

    def _on_subscribe(self, client: Any, userdata: Any, mid: Any, reason_codes: Any, properties: Any) -> None:
        with self._lock:
            self.state.subacks += 1

    def subscribed(self) -> bool:
        """Connected, and the broker acknowledged every subscription sent (messages published now arrive)."""
        with self._lock:
            st = self.state
            return st.connected and st.subacks >= st.subscribes > 0

    def _mark_down(self, reason: str, only_if_connected: bool = False) -> None:
        with self._lock:
            st = self.state
            if only_if_connected and not st.connected:
                return  # the socket closing after a refused CONNECT: keep the refusal as the reason
            changed = st.connected or st.last_error != reason
            if st.connected:
                st.down_since = time.monotonic()
            st.connected = False
            st.last_error = reason
        if changed:  # once per outage and per new reason, not at every retry
            log.warning("MQTT broker %s: %s (reconnecting with backoff up to %ds)", self.settings.url, reason,
                        RECONNECT_MAX)

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        try:
            if self._client is None:
                return  # our own disconnect at shutdown
            self._mark_down(f"connection lost ({reason_code})", only_if_connected=True)
        except Exception:
            log.exception("MQTT on_disconnect")

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        try:
            self._mark_down(f"cannot connect: {self._probe()}")
        except Exception:
            log.exception("MQTT on_connect_fail")

    def _probe(self) -> str:
        """Why connecting fails, in words (paho does not say): refused, timeout, or the TLS error.

        Runs in paho's thread just before it waits out its reconnect delay.
        """
        try:
            with socket.create_connection((self.host, self.port), timeout=5) as raw:
                if self.scheme != "mqtts":
                    return "the broker accepted TCP but not the MQTT connection"
                with self._ssl_context().wrap_socket(raw, server_hostname=self.host) as tls:
                    tls.settimeout(5)
                return "the broker accepted TCP and TLS but not the MQTT connection"
        except ssl.SSLCertVerificationError as exc:
            return f"TLS certificate not trusted: {exc.verify_message or exc}"
        except ssl.SSLError as exc:
            return f"TLS failed: {exc.reason or exc}"
        except OSError as exc:
            return exc.strerror or type(exc).__name__

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        arrival = time.time()
        try:
            try:
                topic = msg.topic
            except UnicodeDecodeError:
                return  # brokers refuse such topics; nothing to route on
            raw = msg.payload
            size = len(raw)
            payload = bytes(raw) if size <= MAX_PAYLOAD_QUEUED else None
            with self._lock:
                subs = self._route(topic)
                if not subs:
                    self.unmatched += 1
                    return
                if len(self._pending) >= MAX_PENDING:
                    # The loop is behind (a burst of retained messages, a busy host). Stop reading the socket
                    # for a while: the broker buffers, as it does for any slow subscriber. Drop only when the
                    # loop makes no progress at all (a stuck agent must not grow without bound).
                    self._room.wait_for(lambda: len(self._pending) < MAX_PENDING, timeout=OVERLOAD_WAIT)
                    if len(self._pending) >= MAX_PENDING:
                        for s in subs:
                            s.dropped += 1
                        return
                self._pending.append((subs, topic, payload, size, bool(msg.retain), arrival))
                if self._drain_scheduled:
                    return
                self._drain_scheduled = True
            loop = self._loop
            if loop is not None:
                loop.call_soon_threadsafe(self._drain)
        except RuntimeError:
            pass  # the event loop is closed: the agent is stopping
        except Exception:
            log.exception("MQTT on_message")

    # -- event loop -----------------------------------------------------------------
    def _drain(self) -> None:
        with self._lock:
            pending = self._pending
            batch = [pending.popleft() for _ in range(min(len(pending), DRAIN_BATCH))]
            more = bool(pending)
            self._drain_scheduled = more
            self._room.notify_all()
        for subs, topic, payload, size, retained, arrival in batch:
            for sub in subs:
                try:
                    sub.deliver(topic, payload, size, retained, arrival)
                except Exception:  # a device bug must not starve the others
                    log.exception("MQTT delivery of %s", topic)
        if more and self._loop is not None:
            self._loop.call_soon(self._drain)  # let polls and pushes run between batches
        if self.unmatched and time.monotonic() - self._unmatched_logged > 60:
            self._unmatched_logged = time.monotonic()
            log.info("MQTT broker %s: %d messages matched no device so far (an old session's subscriptions?)",
                     self.settings.url, self.unmatched)
