import { assertEquals, assertMatch, assertOk, assertThrows } from "../helpers/assert.ts";
import {
  acquireConnectionLock,
  connectionLockPath,
  LOCK_DIR,
  LockHeldError,
  lockScopeNote,
  lockUri,
  type StateLock,
} from "../../lib/state/lock.ts";
import { recordCase } from "../../scripts/reliability_report.ts";
import { canUnshareMounts, runInPrivateMounts } from "../helpers/cli.ts";
import { DEAD_HOLDER, plantDeadLock } from "../helpers/locks.ts";
import { chattr, immutableUnavailable } from "../helpers/immutable.ts";

const LOCK_MODULE = new URL("../../lib/state/lock.ts", import.meta.url).href;

/** The test driver's connection: its lock lives in the state directory, never under /run. */
const URI = "test:///default";

/** Takes the lock of {@link URI} with `dir` as the state directory. */
function acquireLock(dir: string, options: { command: string }): StateLock {
  return acquireConnectionLock(URI, { stateDir: dir, ...options });
}

/** Where {@link acquireLock} puts the lock for `dir`. */
function lockFile(dir: string): string {
  return connectionLockPath(URI, dir);
}

function tempDir(): string {
  return Deno.makeTempDirSync({ prefix: "passthrough-lock-test-" });
}

function heldError(fn: () => unknown): LockHeldError {
  try {
    fn();
  } catch (error) {
    if (error instanceof LockHeldError) return error;
    throw error;
  }
  throw new Error("Expected LockHeldError");
}

/** A child process that takes the lock, says "locked" and waits to be killed. */
async function lockingChild(dir: string): Promise<Deno.ChildProcess> {
  const code = `
    import { acquireConnectionLock } from ${JSON.stringify(LOCK_MODULE)};
    const lock = acquireConnectionLock("test:///default", { stateDir: ${
    JSON.stringify(dir)
  }, command: "apply" });
    console.log("locked");
    await new Promise(() => setInterval(() => {}, 1000));
  `;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["eval", "--quiet", code],
    stdout: "piped",
    stderr: "inherit",
    stdin: "null",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let seen = "";
  while (!seen.includes("locked")) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`Child exited before locking: ${seen}`);
    seen += value;
  }
  reader.releaseLock();
  return child;
}

Deno.test("the connection lock refuses a second holder and names the first", () => {
  const dir = tempDir();
  try {
    using first = acquireLock(dir, { command: "apply" });
    const error = heldError(() => acquireLock(dir, { command: "rollback" }));
    assertEquals(error.holder?.pid, Deno.pid);
    assertEquals(error.holder?.command, "apply");
    assertEquals(error.holder?.startedAt, first.holder.startedAt);
    assertOk(error.message.includes(`pid ${Deno.pid}`), error.message);
    // The holder's lock is untouched by the failed attempt.
    assertEquals(JSON.parse(Deno.readTextFileSync(first.path)).pid, Deno.pid);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("the connection lock lock file holds pid, host, start time and command with mode 0600", () => {
  const dir = tempDir();
  try {
    using lock = acquireLock(dir, { command: "apply" });
    const written = JSON.parse(Deno.readTextFileSync(lockFile(dir)));
    assertEquals(written, lock.holder);
    assertEquals(typeof written.host, "string");
    assertEquals((Deno.statSync(lockFile(dir)).mode ?? 0) & 0o777, 0o600);
    assertEquals(lock.brokeStale, null);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("the connection lock releases with using, so the next run gets the lock", () => {
  const dir = tempDir();
  try {
    {
      using _lock = acquireLock(dir, { command: "apply" });
    }
    assertThrows(() => Deno.lstatSync(lockFile(dir)), Deno.errors.NotFound);
    using again = acquireLock(dir, { command: "apply" });
    assertEquals(again.brokeStale, null);
    again.release();
    again.release(); // Idempotent.
    assertEquals([...Deno.readDirSync(dir)].length, 0);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("the connection lock breaks a stale lock left by a dead process and reports it", () => {
  const dir = tempDir();
  try {
    plantDeadLock(URI, dir);
    using lock = acquireLock(dir, { command: "apply" });
    assertEquals(lock.brokeStale, DEAD_HOLDER);
    assertEquals(JSON.parse(Deno.readTextFileSync(lockFile(dir))).pid, Deno.pid);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test({
  name: "the connection lock says to remove a stale lock it may not break (chattr +i)",
  ignore: immutableUnavailable() !== null,
  fn() {
    const dir = tempDir();
    try {
      plantDeadLock(URI, dir);
      assertOk(chattr("+i", lockFile(dir)), `chattr +i ${lockFile(dir)}`);
      try {
        let error: unknown = null;
        try {
          acquireLock(dir, { command: "apply" }).release();
        } catch (thrown) {
          error = thrown;
        }
        assertOk(error instanceof Error, String(error));
        // It was the system's "Operation not permitted (os error 1): open '...'" alone.
        assertEquals(
          error.message,
          `Cannot break the lock "${
            lockFile(dir)
          }" which may be stale: if no passthrough apply or rollback runs, remove it ("rm ${
            lockFile(dir)
          }")`,
        );
        assertOk(error.cause instanceof Deno.errors.PermissionDenied);
      } finally {
        chattr("-i", lockFile(dir));
      }
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});

Deno.test("the connection lock fails fast while another process holds the lock, and breaks it once that process is killed", async () => {
  const dir = tempDir();
  const child = await lockingChild(dir);
  try {
    const error = heldError(() => acquireLock(dir, { command: "apply" }));
    assertEquals(error.holder?.pid, child.pid);
    child.kill("SIGKILL");
    await child.status;
    // The lock file survives the kill; the kernel lock that proved the holder alive does not.
    assertEquals(JSON.parse(Deno.readTextFileSync(lockFile(dir))).pid, child.pid);
    using lock = acquireLock(dir, { command: "apply" });
    assertEquals(lock.brokeStale?.pid, child.pid);
  } finally {
    try {
      child.kill("SIGKILL");
    } catch {
      // Already dead.
    }
    await child.stdout.cancel().catch(() => {});
    await child.status;
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("the connection lock release leaves a lock file that is no longer its own", () => {
  const dir = tempDir();
  try {
    const lock = acquireLock(dir, { command: "apply" });
    // Someone removed our lock by hand and another run took it.
    Deno.removeSync(lockFile(dir));
    Deno.writeTextFileSync(lockFile(dir), '{"pid":1,"host":"h","startedAt":"t","command":"apply"}');
    lock.release();
    assertEquals(JSON.parse(Deno.readTextFileSync(lockFile(dir))).pid, 1);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("the connection lock reports a lock taken while it looked at a stale one as held", () => {
  // The race the test below hits now and then, made certain: between the lock's look at the
  // stale lock and its open, a racing process breaks it and links its own, which it holds. This
  // process sees a file other than the one it looked at: held, not an error about the directory.
  const dir = tempDir();
  const path = lockFile(dir);
  plantDeadLock(URI, dir);
  const lstat = Deno.lstatSync;
  let winner: Deno.FsFile | null = null;
  Deno.lstatSync = (p: string | URL) => {
    const info = lstat(p);
    if (p === path && winner === null) {
      // As the lock itself is taken: written aside (another inode), locked, then linked.
      const taken = { ...DEAD_HOLDER, pid: Deno.pid, host: "racer" };
      Deno.writeTextFileSync(`${path}.racer`, JSON.stringify(taken), { mode: 0o600 });
      winner = Deno.openSync(`${path}.racer`, { read: true, write: true });
      assertOk(winner.tryLockSync(true));
      Deno.removeSync(path);
      Deno.linkSync(`${path}.racer`, path);
      Deno.removeSync(`${path}.racer`);
    }
    return info;
  };
  try {
    const error = heldError(() => acquireLock(dir, { command: "apply" }));
    assertEquals(error.holder?.host, "racer");
  } finally {
    Deno.lstatSync = lstat;
    (winner as Deno.FsFile | null)?.close();
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("the connection lock leaves a lock taken while it read the stale one it opened", () => {
  // The race made certain one step later: this process opened the stale lock, and as it reads the
  // holder a racing process breaks that lock and links its own, which it holds. The flock this
  // process then gets is of the stale file, no longer the lock's: removing the name would remove
  // the racer's lock and let two runs hold it.
  const dir = tempDir();
  const path = lockFile(dir);
  plantDeadLock(URI, dir);
  const readSync = Deno.FsFile.prototype.readSync;
  let winner: Deno.FsFile | null = null;
  Deno.FsFile.prototype.readSync = function (this: Deno.FsFile, buffer: Uint8Array) {
    if (winner === null) {
      const taken = { ...DEAD_HOLDER, pid: Deno.pid, host: "racer" };
      Deno.writeTextFileSync(`${path}.racer`, JSON.stringify(taken), { mode: 0o600 });
      winner = Deno.openSync(`${path}.racer`, { read: true, write: true });
      assertOk(winner.tryLockSync(true));
      Deno.removeSync(path);
      Deno.linkSync(`${path}.racer`, path);
      Deno.removeSync(`${path}.racer`);
    }
    return readSync.call(this, buffer);
  };
  try {
    const error = heldError(() => acquireLock(dir, { command: "apply" }));
    assertEquals(error.holder?.host, "racer");
    assertEquals(JSON.parse(Deno.readTextFileSync(path)).host, "racer");
  } finally {
    Deno.FsFile.prototype.readSync = readSync;
    (winner as Deno.FsFile | null)?.close();
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("the connection lock lets exactly one of many racing processes break a stale lock", async () => {
  const dir = tempDir();
  plantDeadLock(URI, dir);
  const code = `
    import { acquireConnectionLock, LockHeldError } from ${JSON.stringify(LOCK_MODULE)};
    while (true) { try { Deno.statSync(${
    JSON.stringify(`${dir}/go`)
  }); break; } catch { await new Promise((r) => setTimeout(r, 1)); } }
    try {
      acquireConnectionLock("test:///default", { stateDir: ${
    JSON.stringify(dir)
  }, command: "apply" });
      console.log("won");
      await new Promise(() => setInterval(() => {}, 1000));
    } catch (error) {
      console.log(error instanceof LockHeldError ? "held" : String(error));
    }
  `;
  const children = Array.from({ length: 8 }, () =>
    new Deno.Command(Deno.execPath(), {
      args: ["eval", "--quiet", code],
      stdout: "piped",
      stderr: "inherit",
      stdin: "null",
    }).spawn());
  try {
    const firstLines = children.map(async (child) => {
      const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
      let seen = "";
      while (!seen.includes("\n")) {
        const { value, done } = await reader.read();
        if (done) break;
        seen += value;
      }
      reader.releaseLock();
      return seen.trim();
    });
    Deno.writeTextFileSync(`${dir}/go`, "");
    const outcomes = await Promise.all(firstLines);
    assertEquals(outcomes.filter((o) => o === "won").length, 1, outcomes.join(","));
    assertEquals(outcomes.filter((o) => o === "held").length, 7, outcomes.join(","));
  } finally {
    for (const child of children) {
      try {
        child.kill("SIGKILL");
      } catch {
        // Already exited.
      }
      await child.stdout.cancel().catch(() => {});
      await child.status;
    }
    Deno.removeSync(dir, { recursive: true });
  }
});

/** Takes the lock of `dir` in a child process: its one-line outcome, or `hung` after `ms`. */
async function acquireInChild(dir: string, ms: number): Promise<string> {
  const code = `
    import { acquireConnectionLock } from ${JSON.stringify(LOCK_MODULE)};
    try {
      using lock = acquireConnectionLock("test:///default", { stateDir: ${
    JSON.stringify(dir)
  }, command: "apply" });
      console.log("acquired, broke " + JSON.stringify(lock.brokeStale));
    } catch (error) {
      console.log("refused: " + error.message);
    }
  `;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["eval", "--quiet", code],
    stdout: "piped",
    stderr: "null",
    stdin: "null",
  }).spawn();
  const timer = setTimeout(() => child.kill("SIGKILL"), ms);
  const output = await child.output();
  clearTimeout(timer);
  return output.success ? new TextDecoder().decode(output.stdout).trim() : "hung";
}

Deno.test("the connection lock names no holder from a stale lock file it did not write", () => {
  const dir = tempDir();
  const holder = { pid: 4242, host: "h", startedAt: "2026-01-01T00:00:00.000Z", command: "apply" };
  const unknown = { pid: 0, host: "unknown", startedAt: "unknown", command: "unknown" };
  const brokeWith = (text: string) => {
    Deno.writeTextFileSync(lockFile(dir), text, { mode: 0o600 });
    using lock = acquireLock(dir, { command: "apply" });
    return lock.brokeStale;
  };
  try {
    assertEquals(brokeWith(`${JSON.stringify(holder)}\n`), holder);
    // Ours are a line of a few hundred bytes: a valid holder padded past 4 KiB is not one of them.
    assertEquals(brokeWith(`${JSON.stringify(holder)}${" ".repeat(4096)}\n`), unknown);
    assertEquals(brokeWith(JSON.stringify({ ...holder, pid: "4242" })), unknown);
    assertEquals(brokeWith(JSON.stringify({ ...holder, command: 1 })), unknown);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("the connection lock refuses a FIFO or a symlink to /dev/zero at the lock's name, and reads a huge lock file only in part", async () => {
  const dir = tempDir();
  const lock = lockFile(dir);
  try {
    new Deno.Command("mkfifo", { args: [lock] }).outputSync();
    assertMatch(
      await acquireInChild(dir, 20_000),
      /^refused: Refusing ".*\/connection-[0-9a-f]{32}\.lock": it is a FIFO/,
    );
    assertOk(Deno.lstatSync(lock).isFifo, "the FIFO is left as it was");
    Deno.removeSync(lock);

    Deno.symlinkSync("/dev/zero", lock);
    assertMatch(
      await acquireInChild(dir, 20_000),
      /^refused: Refusing ".*\/connection-[0-9a-f]{32}\.lock": it is a symbolic link/,
    );
    assertEquals(Deno.readLinkSync(lock), "/dev/zero");
    Deno.removeSync(lock);

    // A 2 GiB lock file (sparse) nobody holds: stale, broken after reading a few KiB of it.
    Deno.writeFileSync(lock, new Uint8Array(0), { mode: 0o600 });
    Deno.truncateSync(lock, 2 * 1024 ** 3);
    assertEquals(
      await acquireInChild(dir, 20_000),
      `acquired, broke {"pid":0,"host":"unknown","startedAt":"unknown","command":"unknown"}`,
    );
    assertThrows(() => Deno.lstatSync(lock), Deno.errors.NotFound);
    recordCase({
      area: "fault",
      name: "lock file planted as a FIFO, a symlink to /dev/zero, a 2 GiB file",
      count: 3,
      outcome: "FIFO and symlink refused by name without opening; huge file read 4 KiB, broken",
      test: "tests/state/lock_test.ts",
    });
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test({
  name:
    "acquireConnectionLock() is one lock per libvirt connection whatever the state directory, and per state directory for the test driver",
  ignore: Deno.uid() !== 0,
  fn() {
    const dir = tempDir();
    try {
      const [one, two] = [`${dir}/one`, `${dir}/two`];
      for (const state of [one, two]) Deno.mkdirSync(state, { mode: 0o700 });
      // A URI no test daemon uses, so this test shares its lock with nobody.
      const uri = `qemu:///system?socket=${dir}/libvirt-sock`;
      {
        using first = acquireConnectionLock(uri, { stateDir: one, command: "apply" });
        assertEquals(first.uri, lockUri(uri));
        assertMatch(first.path, new RegExp(`^${LOCK_DIR}/connection-[0-9a-f]{32}\\.lock$`));
        assertEquals((Deno.statSync(LOCK_DIR).mode ?? 0) & 0o777, 0o700);
        // Another state directory, the same connection spelled another way: held.
        const spelled = `QEMU+unix:///system/?socket=${dir}/libvirt-sock&no_verify=1`;
        const error = heldError(() =>
          acquireConnectionLock(spelled, { stateDir: two, command: "rollback" })
        );
        assertEquals(error.holder?.uri, lockUri(uri));
        assertOk(error.message.includes(`" of "${lockUri(uri)}": pid ${Deno.pid}`), error.message);
        // Another connection is another lock.
        using _other = acquireConnectionLock(`${uri}2`, { stateDir: two, command: "apply" });
      }
      // The test driver's world is the process's own: its lock is the state directory's.
      const test = "test:///default";
      using a = acquireConnectionLock(test, { stateDir: one, command: "apply" });
      using b = acquireConnectionLock(test, { stateDir: two, command: "apply" });
      assertEquals([a.path.startsWith(`${one}/`), b.path.startsWith(`${two}/`)], [true, true]);
      assertEquals(connectionLockPath(test, one), a.path);
      recordCase({
        area: "concurrency",
        name: "connection lock taken with two state directories and two spellings of one URI",
        count: 1,
        outcome: "the second fails naming the holder and the connection",
        test: "tests/state/lock_test.ts",
      });
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});

/**
 * Takes the lock of a `qemu:///system` URI in a private mount namespace whose `/run` is a fresh
 * tmpfs prepared by the shell command `setup`, as root or as uid 65534 with state directory
 * `stateDir`: the lock's path, or the error's name and problem.
 */
async function lockWithRun(
  setup: string,
  stateDir: string,
  uid?: number,
  permissions?: string[],
): Promise<string> {
  const code = `
    import { acquireConnectionLock } from ${JSON.stringify(LOCK_MODULE)};
    try {
      using lock = acquireConnectionLock("qemu:///system?socket=/run/none", {
        stateDir: ${JSON.stringify(stateDir)},
        command: "apply",
      });
      console.log("locked " + lock.path);
    } catch (error) {
      console.log("refused " + error.name + " " + error.problem);
    }
  `;
  const as = uid === undefined
    ? []
    : ["setpriv", `--reuid=${uid}`, `--regid=${uid}`, "--clear-groups"];
  // `deno eval` allows everything; a script run with `permissions` has only those.
  const script = `${stateDir}/../lock.ts`;
  if (permissions !== undefined) Deno.writeTextFileSync(script, code, { mode: 0o644 });
  const run = permissions === undefined
    ? ["eval", "--quiet", code]
    : ["run", "--quiet", "--no-prompt", ...permissions, script];
  const out = await runInPrivateMounts(
    `mount -t tmpfs tmpfs /run && ${setup}`,
    [...as, Deno.execPath(), ...run],
    { DENO_DIR: `${stateDir}/../deno`, HOME: stateDir },
  );
  const text = out.stdout.trim();
  assertEquals(out.code, 0, out.stderr);
  return text;
}

Deno.test({
  name:
    "acquireConnectionLock() refuses an unsafe /run/passthrough, and falls back to the state directory only for a user who cannot use root's",
  ignore: !canUnshareMounts(),
  async fn() {
    const dir = tempDir();
    try {
      Deno.chmodSync(dir, 0o755);
      const state = `${dir}/state`;
      Deno.mkdirSync(state, { mode: 0o700 });
      Deno.mkdirSync(`${dir}/deno`, { mode: 0o777 });
      Deno.chmodSync(`${dir}/deno`, 0o777);
      // Root: a symlink or a world-writable directory at /run/passthrough stops the run.
      assertEquals(
        await lockWithRun("mkdir -m 700 /run/elsewhere && ln -s elsewhere /run/passthrough", state),
        "refused StateDirError symlink",
      );
      assertEquals(
        await lockWithRun("mkdir -m 777 /run/passthrough", state),
        "refused StateDirError loose-permissions",
      );
      assertMatch(
        await lockWithRun("true", state),
        /^locked \/run\/passthrough\/connection-[0-9a-f]{32}\.lock$/,
      );
      // Root, with /run read-only (or out of inodes): the lock went to the state directory
      // unsaid, where a run with another state directory did not see it.
      assertEquals(
        await lockWithRun("mount -o remount,ro /run", state),
        "refused StateDirError unwritable",
      );
      // Another user, with root's /run/passthrough there or not creatable: its state directory.
      const theirs = `${dir}/theirs`;
      Deno.mkdirSync(theirs, { mode: 0o700 });
      Deno.chownSync(theirs, 65534, 65534);
      for (const setup of ["mkdir -m 700 /run/passthrough", "chmod 755 /run"]) {
        assertEquals(
          (await lockWithRun(setup, theirs, 65534)).replace(/[0-9a-f]{32}/, "H"),
          `locked ${theirs}/connection-H.lock`,
          setup,
        );
      }
      // A library script without --allow-sys=uid: it did not see root's directory was not its
      // own, and stopped on a bare "Permission denied (os error 13)" making the lock there.
      assertEquals(
        (await lockWithRun("mkdir -m 700 /run/passthrough", theirs, 65534, [
          "--allow-read",
          "--allow-write",
        ])).replace(/[0-9a-f]{32}/, "H"),
        `locked ${theirs}/connection-H.lock`,
      );
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "acquireConnectionLock() that cannot create its lock says which lock, and that nothing was done",
  ignore: !canUnshareMounts(),
  async fn() {
    const dir = tempDir();
    try {
      const state = `${dir}/state`;
      Deno.mkdirSync(state, { mode: 0o700 });
      const code = `
        import { acquireConnectionLock } from ${JSON.stringify(LOCK_MODULE)};
        try {
          acquireConnectionLock("qemu:///system?socket=/run/none", {
            stateDir: ${JSON.stringify(state)},
            command: "apply",
          }).release();
          console.log("locked");
        } catch (error) {
          console.log(error.message);
        }
      `;
      // /run without room for the lock's file, past the look at /run/passthrough.
      const out = await runInPrivateMounts(
        "mount -t tmpfs -o size=64k tmpfs /run && mkdir -m 700 /run/passthrough && " +
          "(dd if=/dev/zero of=/run/fill bs=4k 2>/dev/null; true)",
        [Deno.execPath(), "eval", "--quiet", code],
        { DENO_DIR: `${dir}/deno`, HOME: dir },
      );
      assertEquals(out.code, 0, out.stderr);
      // It said "No space left on device (os error 28)", and nothing else.
      assertMatch(
        out.stdout,
        /^Cannot take the lock "\/run\/passthrough\/connection-[0-9a-f]{32}\.lock" \(one apply or rollback at a time per libvirt connection\), so nothing was done: No space left on device \(os error 28\)\n$/,
      );
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});

Deno.test("lockUri() is one lock for the system daemon by any of its own sockets, and takes the socket libvirt takes", () => {
  // Each reaches the one system QEMU driver: two applies by two of them each took a lock.
  for (
    const uri of [
      "qemu:///system?socket=/run/libvirt/libvirt-sock",
      "qemu+unix:///system?socket=/var/run/libvirt/virtqemud-sock",
      "qemu:///system?socket=/tmp/private&SOCKET=/run/libvirt/virtqemud-sock",
    ]
  ) assertEquals(lockUri(uri), "qemu:///system", uri);
  // libvirt connects to the last socket= by any case: the lock is that daemon's.
  assertEquals(lockUri("qemu:///system?socket=/a&socket=/b"), "qemu:///system?socket=/b");
  assertEquals(lockUri("qemu:///system?Socket=/s"), "qemu:///system?socket=/s");
});

Deno.test("lockScopeNote() of a user's session sends no one to root, whose qemu:///session is another libvirt", () => {
  const lock = (uri: string) => ({ path: `/home/u/pt/connection-${"0".repeat(32)}.lock`, uri });
  // The system daemon: root's runs lock it in /run/passthrough, which this run does not.
  assertMatch(
    lockScopeNote(lock("qemu:///system"))!,
    /an apply or rollback by root, or with another state directory, is not kept out meanwhile; run it as root/,
  );
  // A session is its user's alone: root's qemu:///session reaches root's own, so "run it as root"
  // locked another libvirt and changed none of this one's VMs.
  for (const uri of ["qemu:///session", "qemu+unix:///session?socket=/run/user/1000/s"]) {
    assertEquals(
      lockScopeNote(lock(lockUri(uri))),
      `Note: this run locks ${
        JSON.stringify(lockUri(uri))
      } (this user's own libvirt) in /home/u/pt: an apply or rollback of it with another state ` +
        "directory is not kept out meanwhile; give its runs one state directory",
    );
  }
});

Deno.test({
  name:
    "acquireConnectionLock() refusing a shared /run/passthrough says to chmod it, not to choose another directory",
  ignore: !canUnshareMounts(),
  async fn() {
    const dir = tempDir();
    try {
      const state = `${dir}/state`;
      Deno.mkdirSync(state, { mode: 0o700 });
      const code = `
        import { acquireConnectionLock } from ${JSON.stringify(LOCK_MODULE)};
        try {
          acquireConnectionLock("qemu:///system", { stateDir: ${
        JSON.stringify(state)
      }, command: "apply" });
        } catch (error) {
          console.log(error.message);
        }
      `;
      for (const mode of ["775", "1777"]) {
        const out = await runInPrivateMounts(
          `mount -t tmpfs tmpfs /run && mkdir -m ${mode} /run/passthrough`,
          [Deno.execPath(), "eval", "--quiet", code],
          { DENO_DIR: `${dir}/deno`, HOME: dir },
        );
        assertEquals(out.code, 0, out.stderr);
        // It said to use "one of passthrough's own, such as the default /var/lib/passthrough": a
        // state directory, which root's lock never moves to (a packager's group-shared
        // /run/passthrough, say, stopped every apply whatever --state-dir said).
        assertEquals(
          out.stdout,
          `Refusing to use "/run/passthrough": it is group- or world-writable (mode ${
            mode.padStart(4, "0")
          }); run "chmod 700 /run/passthrough"\n`,
        );
      }
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});

Deno.test("lockUri() is one lock for the system daemon through any transport libvirt takes to this host", () => {
  // With no host, each reaches this host's system QEMU driver, whose policies apply records for
  // the start guard as it does for qemu:///system: two applies by two of them each took a lock.
  for (
    const uri of [
      "qemu+tls:///system",
      "qemu+tcp:///system",
      "qemu+ssh:///system",
      "qemu+libssh2:///system/",
      "QEMU+TLS:///system?no_verify=1",
    ]
  ) assertEquals(lockUri(uri), "qemu:///system", uri);
  // Another machine's, or another daemon's socket, stays its own.
  assertEquals(lockUri("qemu+tls://hv1/system"), "qemu+tls://hv1/system");
  assertEquals(lockUri("qemu+ssh:///session"), "qemu+ssh:///session");
  assertEquals(lockUri("qemu:///system?socket=/tmp/s"), "qemu:///system?socket=/tmp/s");
});
