"""The MES connector (OPC UA ISA-95 Job Control + MQTT): releases become job orders on the
shop floor; job states, good/scrap quantities and quality holds come back as order changes.

Files: ``config`` (MesConfig), ``sink`` (releases -> job orders), ``source`` (job states and
shop-floor messages -> changes), ``mapping`` (pure), ``opcua`` (asyncua client), ``mqtt`` (the
message format). Needs the ``mes`` extra: ``pip install 'orderhub[mes]'``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
from typing import Any

from connectors.mes.config import MesConfig
from hub.sdk import Connector, OrderRelease, Polled

log = logging.getLogger(__name__)
#: Lifecycle steps remembered in the cursor (each order makes at most two).
EMITTED_KEPT = 2000


class MesConnector(Connector[MesConfig]):
    """Job orders out over OPC UA; job states, progress and holds back."""

    kind = "mes"
    system = "MES"
    Config = MesConfig
    owns = ("status (RELEASED>IN_PRODUCTION>COMPLETED)", "actual_start", "actual_end", "lines.*.good_quantity",
            "lines.*.scrap_quantity", "on_hold", "hold_reasons")

    async def start(self) -> None:
        self._client: Any = None
        self._connecting = asyncio.Lock()
        self._listener: asyncio.Task[None] | None = None
        if self.config.mqtt_host:
            if importlib.util.find_spec("aiomqtt") is None:
                raise ImportError("the MES connector's shop-floor messages need aiomqtt: pip install 'orderhub[mes]'")
            self._listener = asyncio.create_task(self._listen(), name="mes-mqtt")

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener
        await self._disconnect()

    async def jobs(self) -> Any:
        """The OPC UA client, connected on first use and again after the MES went away."""
        from connectors.mes.opcua import JobOrderReceiverClient  # the mes extra; its ImportError says so

        async with self._connecting:  # the poll, the sink and the MQTT listener share one session
            if self._client is None:
                client = JobOrderReceiverClient(self.config.opc_url)
                await client.__aenter__()
                self._client = client
        return self._client

    async def _disconnect(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            with contextlib.suppress(Exception):
                await client.__aexit__(None, None, None)

    async def poll(self, cursor: dict[str, Any]) -> Polled:
        from connectors.mes.opcua import MesUnavailable
        from connectors.mes.source import lifecycle_steps

        try:
            jobs = await (await self.jobs()).list_jobs()
        except MesUnavailable:
            await self._disconnect()
            raise
        # job states are read whole each time: the cursor remembers the steps already handed over
        emitted = list(cursor.get("emitted", []))
        steps = [step for step in lifecycle_steps(jobs, self.context) if step.event_id not in emitted]
        return Polled(steps, {"emitted": (emitted + [s.event_id for s in steps])[-EMITTED_KEPT:]})

    async def on_release(self, release: OrderRelease) -> None:
        from connectors.mes.opcua import MesUnavailable
        from connectors.mes.sink import store_jobs

        try:
            await store_jobs(await self.jobs(), release, self.context)
        except MesUnavailable:
            await self._disconnect()
            raise

    async def _listen(self) -> None:
        """Shop-floor messages over MQTT, for as long as the connector runs (reconnecting with back-off)."""
        import aiomqtt  # the mes extra: start() fails loudly when it is missing

        from connectors.mes.mqtt import SUBSCRIPTION, parse_message
        from connectors.mes.opcua import MesUnavailable
        from connectors.mes.source import report_change
        from hub.sdk import Unmappable, UnmappableRecord

        delay = 0.5
        while True:
            try:
                password = self.config.mqtt_password.get_secret_value() if self.config.mqtt_password else None
                # a fixed client id and a kept session: what is published while the connector reconnects
                # or restarts waits at the broker (QoS 1); instances of one connector share the topics
                async with aiomqtt.Client(self.config.mqtt_host, self.config.mqtt_port, username=self.config.mqtt_user,
                                          password=password, identifier=self.config.mqtt_client_id,
                                          clean_session=False) as mqtt:
                    await mqtt.subscribe(f"$share/{self.config.mqtt_share_group}/{SUBSCRIPTION}", qos=1)
                    delay = 0.5
                    async for message in mqtt.messages:
                        topic = str(message.topic)
                        try:
                            report = parse_message(topic, bytes(message.payload))
                        except UnmappableRecord as exc:
                            await self.emit([Unmappable(bytes(message.payload), str(exc), key=topic)])
                            continue
                        job = await (await self.jobs()).find(report.job_order_id)
                        await self.emit([report_change(report, job, self.context)])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the broker or the MES went away: reconnect
                log.warning("MES shop-floor messages: %s; reconnecting in %.1fs", exc, delay)
                if isinstance(exc, MesUnavailable):
                    await self._disconnect()
                await asyncio.sleep(delay)
                delay = min(30.0, delay * 2)
