import { assertEquals, assertMatch, assertOk, assertThrows } from "../helpers/assert.ts";
import {
  DEFAULT_STATE_DIR,
  ensurePrivateDir,
  openStateDir,
  readOwnFileSync,
  resolveStateDirPath,
  StateDirError,
  writeNewFileSync,
} from "../../lib/state/state_dir.ts";
import { canUnshareMounts } from "../helpers/cli.ts";

function tempDir(): string {
  return Deno.makeTempDirSync({ prefix: "passthrough-state-test-" });
}

function mode(path: string): number {
  return (Deno.lstatSync(path).mode ?? 0) & 0o7777;
}

function problemOf(fn: () => unknown): string {
  try {
    fn();
  } catch (error) {
    if (error instanceof StateDirError) return error.problem;
    throw error;
  }
  return "none";
}

Deno.test("resolveStateDirPath() prefers the flag, then PASSTHROUGH_STATE_DIR, then the default", () => {
  const env = (value: string | undefined) => (name: string) =>
    name === "PASSTHROUGH_STATE_DIR" ? value : undefined;
  assertEquals(resolveStateDirPath({ flag: "/a", env: env("/b") }), "/a");
  assertEquals(resolveStateDirPath({ env: env("/b") }), "/b");
  assertEquals(resolveStateDirPath({ env: env("") }), DEFAULT_STATE_DIR);
  assertEquals(resolveStateDirPath({ env: env(undefined) }), "/var/lib/passthrough");
  assertEquals(resolveStateDirPath({ flag: "rel" }), `${Deno.cwd()}/rel`);
});

Deno.test("openStateDir() creates the directory and backups/ with mode 0700", () => {
  const root = tempDir();
  try {
    const state = openStateDir(`${root}/deep/state`);
    assertEquals(mode(state.path), 0o700);
    assertEquals(mode(state.backupsPath), 0o700);
    assertEquals(state.backupsPath, `${root}/deep/state/backups`);
    // No probe file is left behind.
    assertEquals([...Deno.readDirSync(state.path)].map((e) => e.name), ["backups"]);
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test("openStateDir() makes a 0755 state directory holding only its own entries 0700, and leaves one holding more", () => {
  const root = tempDir();
  try {
    // What an older passthrough, or the start guard under libvirt's umask, left.
    const old = `${root}/old`;
    for (const dir of [old, `${old}/deno`, `${old}/guard`]) Deno.mkdirSync(dir, { mode: 0o755 });
    Deno.chmodSync(old, 0o755);
    openStateDir(old, { write: false });
    assertEquals(mode(old), 0o755); // A read-only open changes nothing.
    openStateDir(old);
    assertEquals(mode(old), 0o700);
    // A directory chosen for more than passthrough keeps its owner's mode.
    const shared = `${root}/shared`;
    Deno.mkdirSync(shared, { mode: 0o755 });
    Deno.chmodSync(shared, 0o755);
    Deno.writeTextFileSync(`${shared}/notes.txt`, "mine\n");
    openStateDir(shared);
    assertEquals(mode(shared), 0o755);
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test("openStateDir() makes its directories 0700 by mkdir's mode alone, never by a chmod of a path a link could be swapped in at", () => {
  const root = tempDir();
  // Watched, not replaced: a chmod by path after mkdir followed a symlink another user who can
  // write the parent swapped in between, and changed the mode of whatever it points to.
  const chmodSync = Deno.chmodSync;
  const chmodded: string[] = [];
  Deno.chmodSync = (path, mode) => {
    chmodded.push(String(path));
    chmodSync(path, mode);
  };
  try {
    const state = openStateDir(`${root}/deep/state`);
    ensurePrivateDir(`${state.backupsPath}/win10`, state);
    assertEquals(chmodded, []);
    for (const dir of [state.path, state.backupsPath, `${state.backupsPath}/win10`]) {
      assertEquals(mode(dir), 0o700, dir);
    }
  } finally {
    Deno.chmodSync = chmodSync;
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test("openStateDir() leaves a 0755 state directory as it is where another user could swap it for a link before the chmod", () => {
  const root = tempDir();
  try {
    const old = (parent: string) => {
      Deno.mkdirSync(`${parent}/old/guard`, { recursive: true, mode: 0o755 });
      Deno.chmodSync(`${parent}/old`, 0o755);
      return `${parent}/old`;
    };
    // A parent anyone may write (not sticky): anyone could rename the directory away and put a
    // link to /etc in its place between the check and the chmod, which would follow it.
    Deno.mkdirSync(`${root}/open`, { mode: 0o777 });
    Deno.chmodSync(`${root}/open`, 0o777);
    openStateDir(old(`${root}/open`));
    assertEquals(mode(`${root}/open/old`), 0o755);
    // Also through a link to such a parent, and two levels below one.
    Deno.symlinkSync(`${root}/open`, `${root}/link`);
    Deno.removeSync(`${root}/open/old`, { recursive: true });
    openStateDir(old(`${root}/link`));
    assertEquals(mode(`${root}/open/old`), 0o755);
    Deno.mkdirSync(`${root}/open/deeper`, { mode: 0o700 });
    openStateDir(old(`${root}/open/deeper`));
    assertEquals(mode(`${root}/open/deeper/old`), 0o755);
    // A sticky one (/tmp): no other user may rename what is ours in it.
    Deno.mkdirSync(`${root}/sticky`);
    Deno.chmodSync(`${root}/sticky`, 0o1777);
    openStateDir(old(`${root}/sticky`));
    assertEquals(mode(`${root}/sticky/old`), 0o700);
    if (Deno.uid() === 0) {
      // Root with a state directory in another user's folder (--state-dir ~alice/pt).
      Deno.mkdirSync(`${root}/alice`, { mode: 0o755 });
      Deno.chownSync(`${root}/alice`, 65534, 65534);
      openStateDir(old(`${root}/alice`));
      assertEquals(mode(`${root}/alice/old`), 0o755);
    }
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test("openStateDir() follows a relative link on the way from the directory the link is in, as the kernel does", () => {
  const root = tempDir();
  try {
    // via -> private/inner, and in it up -> ../open: the kernel reads "../open" from
    // private/inner, reaching private/open, which anyone may write. Read from the path as spelt
    // (via/..), it was open, a private one, and the 0755 state directory was chmodded through a
    // way another user could swap for a link.
    Deno.mkdirSync(`${root}/private/inner`, { recursive: true, mode: 0o700 });
    Deno.mkdirSync(`${root}/private/open`);
    Deno.chmodSync(`${root}/private/open`, 0o777);
    Deno.mkdirSync(`${root}/open`, { mode: 0o700 });
    Deno.symlinkSync(`${root}/private/inner`, `${root}/via`);
    Deno.symlinkSync("../open", `${root}/private/inner/up`);
    Deno.mkdirSync(`${root}/private/open/state/guard`, { recursive: true, mode: 0o755 });
    Deno.chmodSync(`${root}/private/open/state`, 0o755);
    openStateDir(`${root}/via/up/state`);
    assertEquals(mode(`${root}/private/open/state`), 0o755);
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test("openStateDir() refuses a state directory that is a symlink", () => {
  const root = tempDir();
  try {
    Deno.mkdirSync(`${root}/real`, { mode: 0o700 });
    Deno.symlinkSync(`${root}/real`, `${root}/state`);
    assertEquals(problemOf(() => openStateDir(`${root}/state`)), "symlink");
    assertThrows(() => openStateDir(`${root}/state`), /symbolic link/);
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test("openStateDir() refuses a backups/ subdirectory that is a symlink", () => {
  const root = tempDir();
  try {
    Deno.mkdirSync(`${root}/state`, { mode: 0o700 });
    Deno.mkdirSync(`${root}/elsewhere`, { mode: 0o700 });
    Deno.symlinkSync(`${root}/elsewhere`, `${root}/state/backups`);
    assertEquals(problemOf(() => openStateDir(`${root}/state`)), "symlink");
    assertEquals(problemOf(() => openStateDir(`${root}/state`, { write: false })), "symlink");
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test("openStateDir() refuses a group- or world-writable directory", () => {
  const root = tempDir();
  try {
    Deno.mkdirSync(`${root}/state`);
    Deno.chmodSync(`${root}/state`, 0o777);
    assertEquals(problemOf(() => openStateDir(`${root}/state`)), "loose-permissions");
    Deno.chmodSync(`${root}/state`, 0o770);
    assertEquals(problemOf(() => openStateDir(`${root}/state`)), "loose-permissions");
    Deno.chmodSync(`${root}/state`, 0o700);
    assertEquals(problemOf(() => openStateDir(`${root}/state`)), "none");
    // What to do depends on who shares it: a sticky directory (/tmp) is everyone's, a directory
    // only its group may write may be a team's, a world-writable one is a mistake.
    const advice = (mode: number) => {
      Deno.chmodSync(`${root}/state`, mode);
      try {
        openStateDir(`${root}/state`);
      } catch (error) {
        return (error as Error).message.replace(/^.*\(mode \d+\)/, "");
      }
      throw new Error("expected a refusal");
    };
    assertMatch(
      advice(0o1777),
      /^, a directory shared with other users: use one of passthrough's own/,
    );
    assertMatch(
      advice(0o770),
      new RegExp(
        `^; if it is passthrough's alone, run "chmod 700 ${root}/state"; if its group shares it on purpose, use one of passthrough's own`,
      ),
    );
    assertEquals(advice(0o777), `; run "chmod 700 ${root}/state"`);
    // A path with a space, quoted for the shell: unquoted, chmod would take two paths.
    Deno.mkdirSync(`${root}/pt state`);
    Deno.chmodSync(`${root}/pt state`, 0o777);
    assertThrows(
      () => openStateDir(`${root}/pt state`),
      Error,
      `; run "chmod 700 '${root}/pt state'"`,
    );
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test({
  name: "openStateDir() refuses a directory owned by another user",
  // Only root can give a directory away.
  ignore: Deno.uid() !== 0,
  fn() {
    const root = tempDir();
    try {
      Deno.mkdirSync(`${root}/state`, { mode: 0o700 });
      Deno.chownSync(`${root}/state`, 65534, null);
      assertEquals(problemOf(() => openStateDir(`${root}/state`)), "foreign-owner");
      assertThrows(
        () => openStateDir(`${root}/state`),
        /owned by uid 65534, not by the current user \(uid 0\): run as its owner, or use a directory of your own$/,
      );
    } finally {
      Deno.removeSync(root, { recursive: true });
    }
  },
});

Deno.test("openStateDir() refusing a group-writable backups/ says to chmod it, not to choose another state directory", () => {
  const root = tempDir();
  try {
    const state = openStateDir(`${root}/state`);
    Deno.chmodSync(state.backupsPath, 0o2775);
    // It offered "use one of passthrough's own, such as the default /var/lib/passthrough", as for
    // the state directory itself: its backups/ is passthrough's whichever directory holds it.
    assertThrows(
      () => openStateDir(`${root}/state`),
      StateDirError,
      `Refusing to use "${root}/state/backups": it is group- or world-writable (mode 2775); run "chmod 700 ${root}/state/backups"`,
    );
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test({
  name:
    "openStateDir() and ensurePrivateDir() say to chown the state directory when a directory in it is another user's",
  // Only root can give a directory away.
  ignore: Deno.uid() !== 0,
  fn() {
    const root = tempDir();
    try {
      // A state directory made by uid 65534, then given to root without -R: "run as its owner"
      // sent root to a user the state directory itself then refuses, and back.
      const state = openStateDir(`${root}/pt state`);
      Deno.mkdirSync(`${state.backupsPath}/win10`, { mode: 0o700 });
      Deno.chownSync(`${state.backupsPath}/win10`, 65534, null);
      assertThrows(
        () => ensurePrivateDir(`${state.backupsPath}/win10`, state),
        StateDirError,
        `Refusing to use "${root}/pt state/backups/win10": it is owned by uid 65534, not by the ` +
          `current user (uid 0), who owns the state directory "${root}/pt state" it is in: ` +
          `make all of it yours with "chown -R 0 '${root}/pt state'"`,
      );
      Deno.chownSync(state.backupsPath, 65534, null);
      assertThrows(
        () => openStateDir(`${root}/pt state`),
        StateDirError,
        `Refusing to use "${root}/pt state/backups": it is owned by uid 65534, not by the ` +
          `current user (uid 0), who owns the state directory "${root}/pt state" it is in: ` +
          `make all of it yours with "chown -R 0 '${root}/pt state'"`,
      );
    } finally {
      Deno.removeSync(root, { recursive: true });
    }
  },
});

Deno.test("openStateDir() reports an unusable path before anything is written", () => {
  const root = tempDir();
  try {
    // A file where a directory is expected: even root cannot create a directory under it.
    Deno.writeTextFileSync(`${root}/file`, "x");
    assertEquals(problemOf(() => openStateDir(`${root}/file/state`)), "unwritable");
    assertEquals(problemOf(() => openStateDir(`${root}/file`)), "not-directory");
    // A read-only file system: /proc refuses new files even to root.
    assertEquals(problemOf(() => openStateDir("/proc/sys")), "unwritable");
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test("openStateDir() with write: false creates nothing and reports a missing directory", () => {
  const root = tempDir();
  try {
    assertEquals(problemOf(() => openStateDir(`${root}/none`, { write: false })), "missing");
    assertThrows(() => Deno.lstatSync(`${root}/none`), Deno.errors.NotFound);
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test('openStateDir("") is refused and writes nothing in the working directory', async () => {
  const cwd = tempDir();
  try {
    // In a process of its own, whose working directory is an empty one: "" resolved to it and
    // got a backups/ directory there.
    const module = new URL("../../lib/state/state_dir.ts", import.meta.url).href;
    const code = `import { openStateDir } from "${module}";
      try { openStateDir(""); console.log("opened"); } catch (e) { console.log(e.name, e.problem); }`;
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["eval", "--no-config", code],
      cwd,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stdout = new TextDecoder().decode(out.stdout);
    assertEquals(stdout, "StateDirError missing\n", new TextDecoder().decode(out.stderr));
    assertEquals([...Deno.readDirSync(cwd)].map((e) => e.name), []);
  } finally {
    Deno.removeSync(cwd, { recursive: true });
  }
});

Deno.test("writeNewFileSync() writes a 0600 file and never replaces an existing one", () => {
  const root = tempDir();
  try {
    const path = writeNewFileSync(root, "a.xml", "<domain/>");
    assertEquals(path, `${root}/a.xml`);
    assertEquals(mode(path), 0o600);
    assertEquals(Deno.readTextFileSync(path), "<domain/>");
    assertThrows(() => writeNewFileSync(root, "a.xml", "other"), Deno.errors.AlreadyExists);
    assertEquals(Deno.readTextFileSync(path), "<domain/>");
    // No temporary file is left behind by the failed attempt.
    assertEquals([...Deno.readDirSync(root)].map((e) => e.name), ["a.xml"]);
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test("writeNewFileSync() does not follow a planted symlink", () => {
  const root = tempDir();
  try {
    Deno.writeTextFileSync(`${root}/victim`, "precious");
    Deno.symlinkSync(`${root}/victim`, `${root}/planted.xml`);
    Deno.symlinkSync(`${root}/missing-target`, `${root}/dangling.xml`);
    assertThrows(() => writeNewFileSync(root, "planted.xml", "evil"), Deno.errors.AlreadyExists);
    assertThrows(() => writeNewFileSync(root, "dangling.xml", "evil"), Deno.errors.AlreadyExists);
    assertEquals(Deno.readTextFileSync(`${root}/victim`), "precious");
    assertThrows(() => Deno.lstatSync(`${root}/missing-target`), Deno.errors.NotFound);
    assertThrows(() => writeNewFileSync(root, "../escape", "x"), TypeError);
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test("openStateDir() accepts a directory it created earlier", () => {
  const root = tempDir();
  try {
    const first = openStateDir(`${root}/state`);
    const second = openStateDir(`${root}/state`);
    assertEquals(second, first);
    assertOk(second.uid !== null);
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test({
  name: "openStateDir() and writeBackup() report a full disk instead of writing half a backup",
  ignore: !canUnshareMounts(),
  async fn() {
    const root = tempDir();
    try {
      const lib = new URL("../../lib/", import.meta.url).href;
      // Runs inside a private mount namespace on a 64 KiB tmpfs filled to the last block.
      const code = `
        import { openStateDir, StateDirError } from "${lib}state/state_dir.ts";
        import { writeBackup } from "${lib}state/backups.ts";
        const dir = ${JSON.stringify(`${root}/mnt`)};
        const out = [];
        try { openStateDir(dir + "/state"); out.push("opened"); }
        catch (e) { out.push(e instanceof StateDirError ? e.problem : String(e)); }
        try {
          writeBackup({ path: dir + "/state", backupsPath: dir + "/state/backups", uid: 0 },
            { vm: "a", uuid: "u", xml: "<domain/>".repeat(1000), reason: "apply", uri: "u" });
          out.push("written");
        } catch (e) { out.push(/No space left/.test(e.message) ? "ENOSPC" : e.message); }
        out.push(Deno.readDirSync(dir + "/state/backups/a").toArray().length);
        console.log(JSON.stringify(out));
      `;
      Deno.mkdirSync(`${root}/mnt`);
      const script = [
        `mount -t tmpfs -o size=64k,mode=700 tmpfs ${root}/mnt`,
        `mkdir -p -m 700 ${root}/mnt/state/backups/a`,
        `(dd if=/dev/zero of=${root}/mnt/fill bs=4k 2>/dev/null; true)`,
        `exec ${Deno.execPath()} eval --quiet '${code.replaceAll("'", "'\\''")}'`,
      ].join(" && ");
      const out = await new Deno.Command("unshare", {
        args: ["-m", "--propagation", "private", "sh", "-c", script],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const stdout = new TextDecoder().decode(out.stdout).trim();
      assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
      // Not writable, no backup, and no temporary file left in the VM's backup directory.
      assertEquals(JSON.parse(stdout), ["unwritable", "ENOSPC", 0]);
    } finally {
      Deno.removeSync(root, { recursive: true });
    }
  },
});

Deno.test("readOwnFileSync() sizes its buffer by the file, not by its limit", () => {
  const dir = tempDir();
  try {
    const path = writeNewFileSync(dir, "small", "four");
    // No buffer of this limit can be allocated: read by it, the file would be a RangeError.
    assertEquals(new TextDecoder().decode(readOwnFileSync(path, Number.MAX_SAFE_INTEGER)), "four");
    assertEquals(readOwnFileSync(path, 4).length, 4);
    assertThrows(() => readOwnFileSync(path, 3), StateDirError, "larger than 3 bytes");
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
