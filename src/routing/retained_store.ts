import { splitFilterMatches } from "../topic/mod.ts";
import type { Message } from "./message.ts";
import { isExpired } from "./message.ts";

/** Outcome of {@link RetainedStore.set}. */
export type RetainResult = "stored" | "deleted" | "refused";

/**
 * Retained messages by topic [MQTT-3.3.1-5..8], bounded by count and payload
 * bytes. When full, a new topic is refused (counted by the caller) while the
 * message is still forwarded; replacing an existing topic is always allowed if
 * the bytes fit.
 */
export class RetainedStore {
  readonly #messages = new Map<string, Message>();
  #bytes = 0;
  readonly maxMessages: number;
  readonly maxBytes: number;

  /** Told about each retained message dropped because it expired (to drop its stored copy). */
  readonly onExpired?: (message: Message) => void;

  constructor(maxMessages: number, maxBytes: number, onExpired?: (message: Message) => void) {
    this.maxMessages = maxMessages;
    this.maxBytes = maxBytes;
    this.onExpired = onExpired;
  }

  /** Number of retained messages. */
  get size(): number {
    return this.#messages.size;
  }

  /** Payload bytes held. */
  get bytes(): number {
    return this.#bytes;
  }

  /** Stores, replaces, or (empty payload) deletes the retained message of `message.topic`. */
  set(message: Message): RetainResult {
    const old = this.#messages.get(message.topic);
    if (message.payload.length === 0) {
      // [MQTT-3.3.1-6] an empty payload removes it and is not stored.
      if (old) {
        this.#messages.delete(message.topic);
        this.#bytes -= old.payload.length;
      }
      return "deleted";
    }
    const delta = message.payload.length - (old?.payload.length ?? 0);
    if ((!old && this.#messages.size >= this.maxMessages) || this.#bytes + delta > this.maxBytes) {
      return "refused";
    }
    this.#messages.set(message.topic, message);
    this.#bytes += delta;
    return "stored";
  }

  /** The retained message of one topic. */
  get(topic: string): Message | undefined {
    return this.#messages.get(topic);
  }

  /** Retained messages matching `filter`, dropping expired ones as they are found. */
  match(filter: string, now: number): Message[] {
    const out: Message[] = [];
    const literal = !filter.includes("+") && !filter.includes("#");
    if (literal) {
      const m = this.#messages.get(filter);
      if (m) this.#keepIfLive(m, now, out);
      return out;
    }
    const levels = filter.split("/");
    for (const m of this.#messages.values()) {
      if (splitFilterMatches(levels, m.topic)) this.#keepIfLive(m, now, out);
    }
    return out;
  }

  /** All retained messages (for persistence and tests). */
  values(): IterableIterator<Message> {
    return this.#messages.values();
  }

  #keepIfLive(m: Message, now: number, out: Message[]): void {
    if (isExpired(m, now)) {
      this.#messages.delete(m.topic);
      this.#bytes -= m.payload.length;
      this.onExpired?.(m);
    } else out.push(m);
  }
}
