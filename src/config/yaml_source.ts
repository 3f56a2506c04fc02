/**
 * Reading a YAML file for the config and ACL readers: the file's text (a read failure becomes a
 * {@link ConfigError} naming the file) and its parsed document with the line counter that maps
 * node offsets to `line:column` for error messages.
 *
 * @module
 */
import { type Document, LineCounter, parseDocument } from "yaml";
import { ConfigError } from "./errors.ts";
import { explainReadError } from "../util/read_error.ts";

/**
 * Reads `path` as text.
 *
 * @param what What the file is, for the message: `config file`, `ACL file`.
 * @throws {ConfigError} `<path>: Cannot read <what>: <reason>`.
 */
export async function readYamlText(path: string, what: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (error) {
    throw new ConfigError({ file: path }, `Cannot read ${what}: ${explainReadError(error)}`, {
      cause: error,
    });
  }
}

/** Parses YAML text strictly (duplicate keys are errors) and keeps line positions. */
export function parseYamlSource(text: string): { doc: Document; lineCounter: LineCounter } {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  return { doc, lineCounter };
}
