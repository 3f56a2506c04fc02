import type { BrokerOptions } from "./options.ts";
import { type Logger, silentLogger } from "../observe/log.ts";

/** Collaborators injected into a {@link Broker}. */
export interface BrokerDeps {
  /** Where the broker logs. */
  logger?: Logger;
}

/** An MQTT broker instance (placeholder until the core lands). */
export class Broker {
  readonly options: BrokerOptions;
  readonly logger: Logger;
  /** Bound addresses of the listeners, known after {@link start}. */
  addresses: { host: string; port: number }[] = [];
  constructor(options: BrokerOptions, deps: BrokerDeps = {}) {
    this.options = options;
    this.logger = deps.logger ?? silentLogger;
  }
  /** Opens the listeners. */
  start(): Promise<void> {
    return Promise.resolve();
  }
  /** Closes listeners and connections. */
  stop(): Promise<void> {
    return Promise.resolve();
  }
}
