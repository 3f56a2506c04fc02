import {
  connackCodeForV4,
  encodePacket,
  MAX_PACKET_SIZE_LIMIT,
  MqttError,
  type Packet,
  PacketDecoder,
  PacketType,
  type PubAckPacket,
  ReasonCode,
} from "../codec/mod.ts";
import type { ByteConn, OutboxOwner } from "../connection/mod.ts";
import { Outbox } from "../connection/mod.ts";
import { isExpired } from "../routing/mod.ts";
import { transientBytes } from "../util/byte_pool.ts";
import { releaseReadBuffer, takeReadBuffer } from "../util/read_buffers.ts";
import type { Delivery, InflightEntry, Session } from "../session/mod.ts";
import type { ClientInfo } from "../auth/mod.ts";
import type { Broker } from "./broker.ts";
import { type DeliveryEncoding, encodeDelivery, keepMessage } from "./delivery_encoding.ts";
import { handleSubscribe, handleUnsubscribe } from "./handle_subscribe.ts";
import { handleConnect } from "./handle_connect.ts";
import { handleAuth, handleDisconnect } from "./handle_disconnect.ts";
import { handlePublish, handlePubrel, type InboundState } from "./handle_publish.ts";
import { CommitAcks } from "./commit_acks.ts";

const EMPTY = new Uint8Array(0);

/**
 * The encoding options of the delivery being written, reused: encodeDelivery keeps nothing of
 * it, and an object per delivery was 88 of the ~1,200 bytes a delivery allocates.
 */
const deliveryEncoding: DeliveryEncoding = {
  v5: true,
  packetId: 0,
  dup: false,
  now: 0,
  alias: undefined,
};

/**
 * Copies a PUBLISH payload into a pooled slab (util/byte_pool.ts) instead of an ArrayBuffer of its
 * own: a new ArrayBuffer costs about 1 µs in Deno, a slab view a tenth of that. Most messages are
 * only passed on; one that is stored gets its own buffer first (keepMessage, at every place a
 * message is kept: retained store, session queue, in flight).
 */
function pooledPayload(buf: Uint8Array, start: number, end: number): Uint8Array {
  const n = end - start;
  const out = transientBytes(n);
  // A small payload is copied byte by byte: `set` needs a subarray, itself a ~100-byte allocation.
  if (n <= 128) { for (let i = 0; i < n; i++) out[i] = buf[start + i]; }
  else out.set(buf.subarray(start, end));
  return out;
}

/** How long a closing connection drains the peer's bytes after our DISCONNECT before it closes. */
const CLOSE_DRAIN_MS = 2_000;

type State = "connecting" | "connected" | "closing" | "closed";

/**
 * One client connection: its read loop over decoded packets, the MQTT
 * protocol state of the connection (aliases, quotas, keep-alive) and the
 * handlers for each packet type. Session state lives in {@link Session}.
 */
export class ClientConnection implements OutboxOwner {
  readonly broker: Broker;
  readonly conn: ByteConn;
  readonly outbox: Outbox;
  readonly decoder: PacketDecoder;
  readonly startedAt: number;
  state: State = "connecting";
  /** Protocol level (3, 4 or 5) once CONNECT is read. */
  protocolVersion = 5;
  clientId = "";
  username?: string;
  session?: Session;
  /** Keep Alive in effect, seconds (0 = none). */
  keepAliveSec = 0;
  lastActivity: number;
  /** The client's Receive Maximum, capped by our outgoing window. */
  sendQuota = 65_535;
  /**
   * The client's Maximum Packet Size (whole packet). Without one, the largest MQTT packet: a small
   * integer, which V8 stores in the object itself (Infinity would cost a heap number each).
   */
  maxPacketSizeOut = MAX_PACKET_SIZE_LIMIT;
  /** The client's Request Problem Information (v5): 0 forbids reason strings on acks. */
  requestProblemInfo = true;
  /** Whether the Will is published when this connection ends (false after DISCONNECT 0x00). */
  publishWillOnClose = true;
  /** Session Expiry the CONNECT asked for, for the DISCONNECT 0 → non-zero rule. */
  connectExpirySec = 0;
  #inbound?: InboundState;
  /** Topic aliases we assigned towards the client on this connection. */
  #aliasesOut?: Map<string, number>;
  /** The client's Topic Alias Maximum (v5): how many aliases we may use towards it. */
  topicAliasMaxOut = 0;
  /** QoS 0 bytes dropped past the soft outbox limit since the outbox last fell below it. */
  #droppedBytes = 0;
  /** Resumed in-flight messages not yet resent because the client's Receive Maximum was full (4.9). */
  #resendBacklog?: Set<number>;
  #info?: ClientInfo;
  #closeReason = "";
  /** PUBACK/PUBREC waiting for store commits (commit_acks.ts), made on the first one. */
  #commitAcks?: CommitAcks;

  constructor(broker: Broker, conn: ByteConn) {
    this.broker = broker;
    this.conn = conn;
    this.startedAt = this.lastActivity = Date.now();
    this.decoder = new PacketDecoder({
      side: "server",
      maxPacketSize: broker.options.maxPacketSize,
      copyPayload: pooledPayload,
    });
    this.outbox = new Outbox(conn, this);
    this.#onReadDone = this.#readDone.bind(this);
  }

  /** From the outbox: a write completed. Below the soft limit, queued messages may follow. */
  outboxDrained(queued: number): void {
    if (queued >= this.broker.options.outboxSoftLimitBytes) return;
    this.#droppedBytes = 0; // caught up
    if (this.state === "connected") this.pump();
  }

  /** From the outbox: a write failed, so the peer is gone. */
  outboxFailed(): void {
    this.#abort("write failed");
  }

  /** Sets who the client is (from its CONNECT); the identity given to auth hooks follows. */
  setIdentity(clientId: string, username: string | undefined): void {
    this.clientId = clientId;
    this.username = username;
    this.#info = undefined;
  }

  /** Identity handed to auth hooks. */
  get info(): ClientInfo {
    return this.#info ??= {
      clientId: this.clientId,
      username: this.username,
      protocolVersion: this.protocolVersion,
      remoteAddress: this.conn.remoteAddress,
      remotePort: this.conn.remotePort,
      certificate: this.conn.peerIdentity,
    };
  }

  // Topic checks against the auth hooks. The identity (`info`, an object kept for the life of the
  // connection) is built only when something can refuse: not with file auth and no ACL.

  /** Whether the auth hooks let this client publish to `topic`. */
  mayPublish(topic: string): boolean {
    return !this.broker.checksTopics || this.broker.auth.authorizePublish(this.info, topic);
  }

  /** Whether the auth hooks let this client subscribe to `filter`. */
  maySubscribe(filter: string): boolean {
    return !this.broker.checksTopics || this.broker.auth.authorizeSubscribe(this.info, filter);
  }

  /** Whether the auth hooks let this client receive a message published to `topic`. */
  mayReceive(topic: string): boolean {
    return !this.broker.checksTopics || this.broker.auth.authorizeDelivery(this.info, topic);
  }

  /** Inbound PUBLISH state of this connection (handle_publish.ts); made on the first PUBLISH. */
  get inbound(): InboundState {
    return this.#inbound ??= { pendingQos1: 0 };
  }

  get v5(): boolean {
    return this.protocolVersion === 5;
  }

  // The read loop is written with callbacks, not as an async function: a connection parked in a
  // pending read then holds one callback instead of a suspended async frame (generator, register
  // file, result promise and resume closures), about 300 bytes less per idle connection.
  #readBuf: Uint8Array = EMPTY;
  /** Bytes of the read being decoded, for growing the buffer after it. */
  #lastRead = 0;
  /**
   * One callback for both outcomes of a read: a byte count or null (end), or an error. A bound
   * method, made once per connection: 40 bytes and one object fewer than an arrow-function field,
   * which needs a context object of its own to hold `this`.
   */
  readonly #onReadDone: (r: unknown) => void;

  #readDone(r: unknown): void {
    try {
      if (typeof r === "number") this.#received(r);
      else if (r === null) {
        this.#closeReason ||= "peer closed";
        this.#endReadLoop();
      } else this.#readFailed(r);
    } catch (err) {
      // A bug in a handler ends this connection, never the process (no unhandled rejection).
      this.#readFailed(err);
    }
  }

  /** Runs the read loop until the connection ends, then tells the broker. Never throws. */
  run(): void {
    // Small to start: idle connections dominate memory (the buffer stays allocated under the
    // pending read); busy ones grow it on full reads. A CONNECT larger than this takes two reads.
    this.#readBuf = takeReadBuffer();
    this.#read();
  }

  #read(): void {
    if (this.state === "closed" || this.#readEnded) {
      this.#endReadLoop();
      return;
    }
    let pending: Promise<number | null>;
    try {
      pending = this.conn.read(this.#readBuf);
    } catch (err) {
      this.#readFailed(err);
      return;
    }
    pending.then(this.#onReadDone, this.#onReadDone);
  }

  #received(n: number): void {
    // After our DISCONNECT we drain and discard until the peer closes [MQTT-4.13.2-1].
    if (this.state === "closing") {
      this.#read();
      return;
    }
    this.broker.metrics.bytesReceived += n;
    this.lastActivity = Date.now();
    const buf = this.#readBuf;
    this.#lastRead = n;
    try {
      this.decoder.push(n === buf.length ? buf : buf.subarray(0, n));
    } catch (err) {
      this.#handlerFailed(err);
      return;
    }
    this.#decodeAll();
  }

  /** Handles every whole packet of the read; a handler that returns a promise (CONNECT) is awaited. */
  #decodeAll(): void {
    try {
      for (let p = this.decoder.next(); p !== undefined; p = this.decoder.next()) {
        this.broker.metrics.packetsReceived++;
        const pending = this.#handle(p);
        if (pending !== undefined) {
          pending.then(() => this.#resume(false, undefined), (err) => this.#resume(true, err));
          return;
        }
        if (this.state !== "connecting" && this.state !== "connected") break;
      }
    } catch (err) {
      this.#handlerFailed(err);
      return;
    }
    this.#readAgain();
  }

  /** Goes on with the read's packets once an awaited handler settled. */
  #resume(failed: boolean, err: unknown): void {
    try {
      if (failed) this.#handlerFailed(err);
      else if (this.state !== "connecting" && this.state !== "connected") this.#readAgain();
      else this.#decodeAll();
    } catch (e) {
      this.#readFailed(e);
    }
  }

  #handlerFailed(err: unknown): void {
    if (!(err instanceof MqttError)) {
      this.#readFailed(err);
      return;
    }
    this.#protocolFailure(err);
    this.#readAgain();
  }

  /** After a read's packets: grow the buffer for bulk senders (idle ones keep a small one), read on. */
  #readAgain(): void {
    const size = this.#readBuf.length;
    if (this.#lastRead === size && size < 65_536) {
      // The read into the old buffer completed and its packets are decoded (the decoder copies an
      // unfinished tail), so a pooled slot may go to another connection.
      releaseReadBuffer(this.#readBuf);
      this.#readBuf = new Uint8Array(Math.min(size * 4, 65_536));
    }
    this.#read();
  }

  #readFailed(err: unknown): void {
    if (this.state === "connecting" || this.state === "connected") {
      this.#closeReason ||= `network error: ${(err as Error)?.message ?? err}`;
    }
    this.#endReadLoop();
  }

  #endReadLoop(): void {
    if (this.#readEnded) return;
    this.#readEnded = true;
    // No read is pending once the loop ends (it ends on a read's outcome, or before the next one).
    releaseReadBuffer(this.#readBuf);
    this.#readBuf = EMPTY;
    try {
      if (this.state === "connecting" || this.state === "connected") {
        this.#abort(this.#closeReason || "closed");
      } else if (this.state === "closing" && this.#writeSideClosed) this.#finish();
    } finally {
      this.broker.onReadLoopEnded(this);
    }
  }

  #handle(p: Packet): Promise<void> | undefined {
    if (this.state === "connecting") {
      if (p.type !== PacketType.Connect) {
        // [MQTT-3.1.0-1] the first packet must be CONNECT: close without a reply.
        this.#abort(`first packet was not CONNECT (type ${p.type})`);
        return;
      }
      const pending = handleConnect(this, p);
      return pending instanceof Promise ? pending : undefined;
    }
    // Handlers whose answer waits for the store return a promise; the read loop does not wait for
    // it, so one commit carries every packet of a read (group commit). Answers still go out in
    // order: flushes resolve in commit order, and callbacks of one commit in registration order.
    switch (p.type) {
      case PacketType.Publish:
        return this.#detach(handlePublish(this, p));
      case PacketType.Puback:
      case PacketType.Pubrec:
      case PacketType.Pubcomp:
        return this.#detach(this.#onOutboundAck(p));
      case PacketType.Pubrel:
        return this.#detach(handlePubrel(this, p));
      case PacketType.Subscribe:
        return this.#detach(handleSubscribe(this, p));
      case PacketType.Unsubscribe:
        return this.#detach(handleUnsubscribe(this, p));
      case PacketType.Pingreq:
        this.send(encodePacket({ type: PacketType.Pingresp }));
        return;
      case PacketType.Disconnect:
        handleDisconnect(this, p);
        return;
      case PacketType.Auth:
        handleAuth(this, p);
        return;
      case PacketType.Connect:
        // [MQTT-3.1.0-2]
        this.disconnect(ReasonCode.ProtocolError, "second CONNECT");
        return;
    }
  }

  /** Lets a handler's pending answer finish on its own; a failure in it ends the connection. */
  #detach(pending: Promise<void> | undefined): undefined {
    pending?.catch((err) => this.#internalError(err));
    return undefined;
  }

  /** A handler failed after its packet was read (in a callback): logged, the connection ends. */
  #internalError(err: unknown): void {
    this.broker.logger.error("packet handler failed", { clientId: this.clientId, error: err });
    this.disconnect(ReasonCode.ImplementationSpecificError, "internal error");
  }

  // ---------------------------------------------------------------- CONNECT

  /** Refuses the CONNECT with a CONNACK in the client's format, then closes gracefully. */
  refuseConnect(reasonCode: number, why: string): void {
    const code = this.v5 ? reasonCode : connackCodeForV4(reasonCode);
    this.broker.logger.info("connection refused", {
      clientId: this.clientId || undefined,
      address: this.conn.remoteAddress,
      reason: `0x${reasonCode.toString(16)}`,
      why,
    });
    const connack = {
      type: PacketType.Connack,
      sessionPresent: false, // [MQTT-3.2.2-6]
      reasonCode: code,
      properties: this.v5 ? { reasonString: why } : undefined,
    } as const;
    const version = this.protocolVersion === 3 ? 4 : this.protocolVersion;
    let bytes = encodePacket(connack, version);
    if (bytes.length > this.maxPacketSizeOut) {
      // [MQTT-3.2.2-19] [MQTT-3.2.2-20] drop the Reason String to fit the client's Maximum Packet Size.
      bytes = encodePacket({ ...connack, properties: undefined }, version);
    }
    this.send(bytes);
    this.publishWillOnClose = false;
    this.#closeGracefully(`refused: ${why}`);
  }

  /** On resumption: every unacknowledged PUBLISH (DUP=1) and PUBREL, in order, with original ids [MQTT-4.4.0-1]. */
  /** Resends every unacknowledged PUBLISH (DUP=1) and PUBREL of a resumed session. */
  resendSession(): void {
    const session = this.session!;
    const now = Date.now();
    let sent = 0;
    for (const entry of session.inflight.values()) {
      // Resends count against this connection's Receive Maximum [MQTT-3.3.4-9] (4.9): the rest
      // wait, in order, for acknowledgements to free slots.
      if (sent >= this.sendQuota) (this.#resendBacklog ??= new Set()).add(entry.packetId);
      else if (this.#resendEntry(entry, now)) sent++;
    }
  }

  /** Resends one in-flight entry; false when it was dropped instead (too large for this client). */
  #resendEntry(entry: InflightEntry, now: number): boolean {
    this.broker.metrics.retransmissions++;
    entry.sentAt = now;
    entry.overdueReported = false;
    if (entry.state === "pubrel") {
      this.send(
        encodePacket(
          { type: PacketType.Pubrel, packetId: entry.packetId, reasonCode: 0 },
          this.protocolVersion,
        ),
      );
    } else if (!this.#writePublish(entry, entry.packetId, true, now)) {
      // [MQTT-3.1.2-25] above this connection's Maximum Packet Size: dropped, counts as delivered,
      // so it must not hold a send slot or stay in the session.
      const session = this.session!;
      session.inflight.delete(entry.packetId);
      this.broker.persistInflightDone(session, entry.packetId);
      return false;
    }
    return true;
  }

  /** Resends held-back resumed messages while the client's Receive Maximum allows. */
  #resendFromBacklog(session: Session): void {
    const now = Date.now();
    const backlog = this.#resendBacklog;
    if (backlog === undefined) return;
    for (const id of backlog) {
      if (session.inflight.size - backlog.size >= this.sendQuota) return;
      backlog.delete(id);
      const entry = session.inflight.get(id);
      if (entry !== undefined) this.#resendEntry(entry, now);
    }
  }

  /** Sends PUBACK/PUBREC/PUBREL/PUBCOMP; a Reason String only when the client asked for problem information. */
  sendAck(
    type: PubAckPacket["type"],
    packetId: number,
    reasonCode: number,
    reasonString?: string,
  ): void {
    const properties = this.v5 && reasonString && this.requestProblemInfo
      ? { reasonString }
      : undefined;
    this.send(encodePacket({ type, packetId, reasonCode, properties }, this.protocolVersion));
  }

  /**
   * Sends a PUBACK or PUBREC once `commit` (the store's flush promise) settles, after those of
   * earlier PUBLISH packets; a failed commit answers 0x80 instead. A QoS 1 PUBLISH counts towards
   * `inbound.pendingQos1` until then (the caller counted it).
   */
  ackAfterCommit(
    commit: Promise<void>,
    type: PubAckPacket["type"],
    packetId: number,
    reasonCode: number,
  ): void {
    (this.#commitAcks ??= new CommitAcks(
      (t, id, code, failure) => this.#releaseCommitAck(t, id, code, failure),
      (err) => this.#internalError(err),
    )).add(commit, type, packetId, reasonCode);
  }

  #releaseCommitAck(type: number, packetId: number, reasonCode: number, failure: unknown): void {
    if (type === PacketType.Puback) this.inbound.pendingQos1--;
    const ackType = type as PubAckPacket["type"];
    if (failure !== undefined) {
      this.broker.logger.error("store commit failed; publish not acknowledged", {
        clientId: this.clientId,
        error: failure,
      });
      if (this.state === "connected") {
        this.sendAck(ackType, packetId, ReasonCode.UnspecifiedError, "storage failure");
      }
      return;
    }
    if (this.state === "connected") this.sendAck(ackType, packetId, reasonCode);
  }

  // ---------------------------------------------------------------- acks of our PUBLISH

  #onOutboundAck(p: PubAckPacket): Promise<void> | undefined {
    const session = this.session!;
    const entry = session.inflight.get(p.packetId);
    const broker = this.broker;
    if (p.type === PacketType.Pubrec) {
      if (entry === undefined || entry.qos !== 2) {
        if (p.reasonCode < 0x80) {
          this.send(encodePacket(
            {
              type: PacketType.Pubrel,
              packetId: p.packetId,
              reasonCode: ReasonCode.PacketIdentifierNotFound,
            },
            this.protocolVersion,
          ));
        }
        return;
      }
      if (p.reasonCode >= 0x80) {
        // [MQTT-4.4.0-2] a PUBREC >= 0x80 completes the message: never resend it.
        this.#complete(session, entry);
        return;
      }
      entry.state = "pubrel";
      entry.sentAt = Date.now();
      entry.overdueReported = false;
      broker.persistInflight(session, entry);
      const sendPubrel = () => {
        if (this.state !== "connected") return;
        this.send(
          encodePacket(
            { type: PacketType.Pubrel, packetId: p.packetId, reasonCode: 0 },
            this.protocolVersion,
          ),
        );
      };
      if (!broker.store.dirty) {
        sendPubrel();
        return;
      }
      // The PUBREC must be durable before PUBREL: otherwise a restart would resend the PUBLISH
      // after the receiver already completed it, and it would be delivered twice.
      return broker.store.flush().then(sendPubrel, (err) => {
        broker.logger.error("store commit failed; PUBREL held back", {
          clientId: this.clientId,
          error: err,
        });
      });
    }
    if (entry === undefined) return; // late or duplicate ack: nothing to do
    if (p.type === PacketType.Puback ? entry.qos !== 1 : entry.state !== "pubrel") {
      broker.logger.debug("ack of the wrong kind ignored", {
        clientId: this.clientId,
        packetId: p.packetId,
      });
      return;
    }
    this.#complete(session, entry);
  }

  #complete(session: Session, entry: InflightEntry): void {
    session.inflight.delete(entry.packetId);
    this.#resendBacklog?.delete(entry.packetId);
    this.broker.persistInflightDone(session, entry.packetId);
    this.#resendFromBacklog(session);
    this.pump();
  }

  // ---------------------------------------------------------------- delivery out

  /**
   * Delivers a message to this connected client: QoS 0 is written at once
   * (or dropped past the soft outbox limit); QoS 1/2 go in flight while the
   * client's Receive Maximum allows, else wait in the session queue in order.
   */
  deliver(d: Delivery, now: number): void {
    const session = this.session!;
    const metrics = this.broker.metrics;
    if (isExpired(d.message, now)) {
      metrics.expiredDropped++;
      return;
    }
    if (d.qos === 0) {
      if (this.outbox.bufferedBytes > this.broker.options.outboxSoftLimitBytes) {
        metrics.qos0DroppedSlowReader++;
        // Dropped bytes count towards the hard limit: above the soft limit the outbox itself
        // stops growing, so a reader that never reads would otherwise never reach it.
        this.#droppedBytes += d.message.payload.length + d.message.topic.length;
        this.#checkHardLimit();
        return;
      }
      this.#writePublish(d, 0, false, now);
      return;
    }
    if (
      session.queueLength === 0 && session.inflightCount < this.sendQuota &&
      this.outbox.bufferedBytes <= this.broker.options.outboxSoftLimitBytes
    ) {
      this.#sendInflight(d, now);
      return;
    }
    this.broker.enqueue(session, d);
  }

  /** Moves queued messages into flight while the client's quota and the outbox allow. */
  pump(): void {
    const session = this.session;
    if (!session || this.state !== "connected" || session.queueLength === 0) return;
    const soft = this.broker.options.outboxSoftLimitBytes;
    const now = Date.now();
    while (
      session.queue.length > 0 && session.inflight.size < this.sendQuota &&
      this.outbox.bufferedBytes <= soft
    ) {
      const d = session.queue.shift()!;
      this.broker.persistDequeue(session, d);
      if (isExpired(d.message, now)) {
        this.broker.metrics.expiredDropped++;
        continue;
      }
      // Queued while offline or under other rules: checked against this client and the rules now.
      if (!this.mayReceive(d.message.topic)) continue;
      this.#sendInflight(d, now);
    }
  }

  #sendInflight(d: Delivery, now: number): void {
    const session = this.session!;
    if (this.#encodedSize(d, now) > this.maxPacketSizeOut) {
      // [MQTT-3.1.2-25] too large for this client: dropped, counts as delivered.
      this.broker.metrics.oversizeDropped++;
      return;
    }
    const packetId = session.allocatePacketId();
    if (packetId === undefined) {
      this.broker.enqueue(session, d);
      return;
    }
    keepMessage(d.message); // stored until acknowledged: nothing of it in a pooled slab
    const entry: InflightEntry = { ...d, packetId, state: "publish", sentAt: now };
    session.inflight.set(packetId, entry);
    this.broker.persistInflight(session, entry);
    const store = this.broker.store;
    if (d.qos === 2 && session.expirySec > 0 && store.dirty) {
      // The client holds a QoS 2 packet id until our PUBREL [MQTT-4.3.3-9]: the PUBLISH goes out
      // only once our record of it is durable. Sent earlier, a crash would forget an id the client
      // still holds, and the next message sent with that id would be swallowed as a re-send.
      const write = () => {
        if (this.state !== "connected" || session.inflight.get(packetId) !== entry) return;
        entry.sentAt = Date.now();
        this.#writePublish(d, packetId, false, entry.sentAt);
      };
      store.flush().then(write, (err) => {
        this.broker.logger.error("store commit failed; QoS 2 PUBLISH sent undurably", {
          clientId: this.clientId,
          error: err,
        });
        write();
      });
      return;
    }
    this.#writePublish(d, packetId, false, now);
  }

  #encodedSize(d: Delivery, now: number): number {
    if (this.maxPacketSizeOut >= MAX_PACKET_SIZE_LIMIT) return 0;
    return encodeDelivery(d, { v5: this.v5, packetId: 1, dup: false, now }).length;
  }

  /** Writes a PUBLISH; false when it is dropped for exceeding the client's Maximum Packet Size. */
  #writePublish(d: Delivery, packetId: number, dup: boolean, now: number): boolean {
    // Topic aliases towards the client, up to its Topic Alias Maximum [MQTT-3.1.2-26]; never on
    // resends, which carry full topic names [MQTT-3.3.1-1].
    let alias: { alias: number; omitTopic: boolean } | undefined;
    if (this.topicAliasMaxOut > 0 && !dup) {
      const known = this.#aliasesOut?.get(d.message.topic);
      if (known !== undefined) alias = { alias: known, omitTopic: true };
      else if ((this.#aliasesOut?.size ?? 0) < this.topicAliasMaxOut) {
        alias = { alias: (this.#aliasesOut?.size ?? 0) + 1, omitTopic: false };
      }
    }
    const how = deliveryEncoding;
    how.v5 = this.v5;
    how.packetId = packetId;
    how.dup = dup;
    how.now = now;
    how.alias = alias;
    const bytes = encodeDelivery(d, how);
    if (bytes.length > this.maxPacketSizeOut) {
      this.broker.metrics.oversizeDropped++;
      return false;
    }
    // The mapping exists for the client only once a PUBLISH carrying topic and alias was sent.
    if (alias !== undefined && !alias.omitTopic) {
      (this.#aliasesOut ??= new Map()).set(d.message.topic, alias.alias);
    }
    this.broker.metrics.messagesDelivered++;
    this.send(bytes);
    return true;
  }

  /** v5: report overdue acks; 3.1.1: resend them with DUP=1 (checklist §5, §12). */
  checkOverdue(now: number): void {
    const session = this.session;
    if (!session || this.state !== "connected" || session.inflightCount === 0) return;
    const interval = this.broker.options.retryIntervalMs;
    for (const entry of session.inflight.values()) {
      if (now - entry.sentAt < interval || this.#resendBacklog?.has(entry.packetId)) continue;
      if (!this.v5) {
        this.broker.metrics.retransmissions++;
        entry.sentAt = now;
        if (entry.state === "pubrel") {
          this.send(
            encodePacket(
              { type: PacketType.Pubrel, packetId: entry.packetId, reasonCode: 0 },
              this.protocolVersion,
            ),
          );
        } else this.#writePublish(entry, entry.packetId, true, now);
        continue;
      }
      if (entry.overdueReported) continue;
      entry.overdueReported = true;
      this.broker.metrics.overdueAcks++;
      this.broker.logger.warn("acknowledgement overdue", {
        clientId: this.clientId,
        packetId: entry.packetId,
        waitingMs: now - entry.sentAt,
      });
      if (this.broker.options.closeOnOverdueAck) {
        this.disconnect(
          ReasonCode.UnspecifiedError,
          "acknowledgement overdue; resent on reconnection",
        );
        return;
      }
    }
  }

  #checkHardLimit(): void {
    const unsent = this.outbox.bufferedBytes + this.#droppedBytes;
    if (unsent > this.broker.options.outboxHardLimitBytes) {
      this.broker.metrics.slowReaderDisconnects++;
      this.broker.logger.warn("slow reader disconnected", {
        clientId: this.clientId,
        unsentBytes: unsent,
      });
      this.#abort("unsent bytes above the hard limit");
      this.#finish(); // close now: a stalled reader's outbox would never drain
    }
  }

  // ---------------------------------------------------------------- writing and closing

  /** Queues encoded bytes for the client. */
  send(bytes: Uint8Array): void {
    if (this.state === "closed") return;
    this.broker.metrics.packetsSent++;
    this.outbox.write(bytes);
  }

  /**
   * Ends the connection with a reason: DISCONNECT (v5, after CONNACK) or a
   * refusing CONNACK (before it), then a graceful close. The Will is published.
   */
  disconnect(reasonCode: number, why: string): void {
    if (this.state === "closing" || this.state === "closed") return;
    if (reasonCode === ReasonCode.ProtocolError || reasonCode === ReasonCode.MalformedPacket) {
      this.broker.metrics.protocolErrors++;
    }
    if (this.state === "connecting") {
      this.refuseConnect(reasonCode, why);
      return;
    }
    this.broker.logger.info("disconnecting client", {
      clientId: this.clientId,
      reason: `0x${reasonCode.toString(16)}`,
      why,
    });
    if (this.v5) {
      const properties = { reasonString: why }; // allowed on DISCONNECT even without Request Problem Information
      const bytes = encodePacket({ type: PacketType.Disconnect, reasonCode, properties }, 5);
      // The DISCONNECT must fit the client's Maximum Packet Size: drop the reason string if not.
      this.send(
        bytes.length <= this.maxPacketSizeOut
          ? bytes
          : encodePacket({ type: PacketType.Disconnect, reasonCode }, 5),
      );
    }
    this.#closeGracefully(why);
  }

  #protocolFailure(err: MqttError): void {
    this.broker.logger.info("protocol error", {
      clientId: this.clientId || undefined,
      address: this.conn.remoteAddress,
      reason: `0x${err.reasonCode.toString(16)}`,
      why: err.message,
    });
    if (this.state === "connecting") {
      if (err.reasonCode === ReasonCode.UnsupportedProtocolVersion) {
        // [MQTT-3.1.2-2] answer in a format the client understands: v5 CONNACK (0x84) for
        // level 5 and above, the 3.1.1 format (0x01) below.
        this.protocolVersion = (err.protocolVersion ?? 0) >= 5 ? 5 : 4;
        this.refuseConnect(err.reasonCode, err.message);
        return;
      }
      // Only a CONNECT read far enough to know it is v5 gets a v5 CONNACK; an oversized one (0x95) was
      // refused from its header alone, so its level is unknown: close without a reply.
      if (
        this.decoder.protocolVersion === 5 && err.reasonCode !== ReasonCode.MalformedPacket &&
        err.reasonCode !== ReasonCode.PacketTooLarge
      ) {
        this.refuseConnect(err.reasonCode, err.message);
        return;
      }
      this.broker.metrics.protocolErrors++;
      this.#abort(err.message); // malformed CONNECT: close without CONNACK
      return;
    }
    if (this.state === "connected") this.disconnect(err.reasonCode, err.message);
  }

  /** Graceful close: flush, end our write side, drain what the client still sends, then close. */
  #closeGracefully(why: string): void {
    if (this.state === "closing" || this.state === "closed") return;
    this.state = "closing";
    this.#closeReason = why;
    this.broker.onConnectionEnded(this, why);
    this.outbox.drained().then(async () => {
      await this.conn.closeWrite();
      this.#writeSideClosed = true;
      if (this.#readEnded) this.#finish();
      else if (this.state === "closing") {
        this.#drainTimer = setTimeout(() => this.#finish(), CLOSE_DRAIN_MS);
      }
    });
  }

  #readEnded = false;
  #writeSideClosed = false;
  #drainTimer?: ReturnType<typeof setTimeout>;

  /** Closes at once for `why` (the client's DISCONNECT): nothing more is sent but what is queued. */
  closeNow(why: string): void {
    this.#closeReason = why;
    this.#abort(why);
  }

  /** Immediate close (network error, client DISCONNECT, first packet not CONNECT). */
  #abort(why: string): void {
    if (this.state === "closed") return;
    const wasOpen = this.state !== "closing";
    this.state = "closing";
    this.#closeReason ||= why;
    if (wasOpen) this.broker.onConnectionEnded(this, why);
    this.outbox.drained().then(() => this.#finish());
  }

  #finish(): void {
    if (this.#drainTimer !== undefined) clearTimeout(this.#drainTimer);
    this.#drainTimer = undefined;
    if (this.state === "closed") return;
    this.state = "closed";
    this.conn.close();
    this.broker.onConnectionClosed(this);
  }

  /** Why the connection ended, for logs. */
  get closeReason(): string {
    return this.#closeReason;
  }
}
