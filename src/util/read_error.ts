/** Says, in a few words, why a file could not be read (for config, password and ACL errors). */
export function explainReadError(error: unknown): string {
  if (error instanceof Deno.errors.NotFound) return "no such file";
  if (error instanceof Deno.errors.IsADirectory) return "it is a directory";
  if (error instanceof Deno.errors.PermissionDenied) return "permission denied";
  if (error instanceof Deno.errors.NotCapable) return "no read permission (run with --allow-read)";
  if (error instanceof Deno.errors.InvalidData) return "not UTF-8 text";
  return error instanceof Error ? error.message : String(error);
}
