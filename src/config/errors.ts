/** Where in a config file a problem was found. */
export interface ConfigErrorLocation {
  /** The file as the user named it (not resolved), e.g. `config/broker.yaml`. */
  file: string;
  /** 1-based line, when the problem has a position in the file. */
  line?: number;
  /** 1-based column, when the problem has a position in the file. */
  column?: number;
}

/**
 * A config file that cannot be read, is not valid YAML, or does not match the schema.
 *
 * The message starts with `file:line:column: ` (or `file: ` when there is no position), so it can
 * be printed as is: `config/broker.yaml:12:5: limits.receive_maximum must be an integer from 1 to
 * 65535, got 0`. {@link ConfigError.reason} holds the message without the location.
 */
export class ConfigError extends SyntaxError {
  /** The file as the user named it. */
  readonly file: string;
  /** 1-based line, or undefined when the problem is not at a position (e.g. a missing file). */
  readonly line: number | undefined;
  /** 1-based column, or undefined when the problem is not at a position. */
  readonly column: number | undefined;
  /** The message without the `file:line:column: ` prefix. */
  readonly reason: string;

  constructor(location: ConfigErrorLocation, reason: string, options?: ErrorOptions) {
    super(`${formatLocation(location)}: ${reason}`, options);
    this.name = "ConfigError";
    this.file = location.file;
    this.line = location.line;
    this.column = location.column;
    this.reason = reason;
  }
}

function formatLocation({ file, line, column }: ConfigErrorLocation): string {
  if (line === undefined) return file;
  return column === undefined ? `${file}:${line}` : `${file}:${line}:${column}`;
}
