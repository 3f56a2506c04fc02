import { MemorySessionStore } from "./store.ts";
import { runSessionStoreContract } from "../../tests/contracts/session_store_contract.ts";

runSessionStoreContract("MemorySessionStore", {
  open: () => Promise.resolve(new MemorySessionStore()),
  reopen: (previous) => Promise.resolve(previous),
});
