/**
 * The YAML config file: reads and strictly validates it into `BrokerOptions`, and merges
 * command-line overrides on top.
 *
 * YAML keys are snake_case and are mapped to the camelCase option fields only here. Errors are
 * {@link ConfigError}s that name `file:line:column`. The embeddable library (`mod.ts` at the top)
 * does not export this folder, so embedders never load npm `yaml`.
 *
 * @module
 */
export { loadAclFile, parseAclFile } from "./acl_file.ts";
export { ConfigError, type ConfigErrorLocation } from "./errors.ts";
export { loadConfigFile, parseConfig } from "./load.ts";
export { type ConfigOverrides, mergeOverrides } from "./overrides.ts";
export {
  type ConfigKey,
  DEFAULT_LISTENER_PORTS,
  LIMIT_KEYS,
  LISTENER_KEY_TYPES,
  LISTENER_KEYS,
  LISTENER_TYPES,
  LOG_LEVELS,
  MAX_MQTT_PACKET_SIZE,
  MIN_PASSWORD_ITERATIONS,
  PORT_RULE,
  TOP_LEVEL_KEYS,
  type ValueRule,
} from "./schema.ts";
