/** Command-line entry point: `deno task start [flags]` (see `--help`). */
import { runCli } from "./src/cli/mod.ts";

if (import.meta.main) Deno.exit(await runCli(Deno.args));
