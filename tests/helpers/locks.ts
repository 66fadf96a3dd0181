/**
 * A lock left behind by a process that died: a lock file whose `flock` nobody holds, as `kill -9`
 * of an `apply` leaves it.
 *
 * @module
 */

import { connectionLockPath, type LockHolder } from "../../lib/state/lock.ts";

/** The holder written into a {@link plantDeadLock} lock: no process, on another host. */
export const DEAD_HOLDER: LockHolder = {
  pid: 999999,
  host: "gone",
  startedAt: "2026-01-01T00:00:00.000Z",
  command: "apply",
};

/** Writes a lock of {@link DEAD_HOLDER} for connection `uri` in `stateDir`, creating the directory. */
export function plantDeadLock(uri: string, stateDir: string): void {
  Deno.mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  Deno.writeTextFileSync(connectionLockPath(uri, stateDir), JSON.stringify(DEAD_HOLDER), {
    mode: 0o600,
  });
}
