// The hook script run by the real /bin/sh and coreutils' timeout, with stand-in commands in place
// of the check: argument passing, the fast path, the deadline, the exit codes; and installing,
// inspecting and removing it in a temporary directory; and finding the daemon to reload.

import { assertEquals, assertMatch, assertOk, assertThrows } from "../helpers/assert.ts";
import { shellQuote } from "../../lib/render/shell.ts";
import {
  checkCommand,
  findTimeout,
  guardStateDirFor,
  HOOK_FILE_NAME,
  hookFileProblems,
  type HookSettings,
  inspectHook,
  installHook,
  parseHookSettings,
  removeHook,
  renderHookScript,
  unsafeHookPaths,
} from "../../lib/guard/hook_file.ts";
import { findHookDaemons, noDaemonMessage, reloadDaemons } from "../../lib/guard/daemon.ts";
import { recordCase } from "../../scripts/reliability_report.ts";
import { denoFsReader } from "../../lib/host/sysfs.ts";
import { libcSysfsReader, signalProcess } from "../../ffi/libc_fs.ts";

const TIMEOUT = findTimeout();

function settings(command: string[], deadline = 10): HookSettings {
  return {
    version: "0.1.0",
    deadline,
    timeout: TIMEOUT ?? "/usr/bin/timeout",
    command,
    env: {},
    stateDir: "/var/lib/passthrough",
    sysfs: "/sys",
  };
}

async function withDir(fn: (dir: string) => Promise<void> | void) {
  const dir = await Deno.makeTempDir({ prefix: "passthrough it's a dir " });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function runScript(
  path: string,
  args: string[],
): Promise<{ code: number; stdout: string; stderr: string; ms: number }> {
  const started = performance.now();
  const out = await new Deno.Command(path, {
    args,
    clearEnv: true,
    env: { LC_ALL: "C", PATH: "/nonexistent" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decode = (b: Uint8Array) => new TextDecoder().decode(b);
  return {
    code: out.code,
    stdout: decode(out.stdout),
    stderr: decode(out.stderr),
    ms: performance.now() - started,
  };
}

/** A stand-in check: a script that records its arguments in `log` and exits `code`. */
function standIn(dir: string, code: number, extra = ""): string {
  const path = `${dir}/check it's`;
  Deno.writeTextFileSync(
    path,
    `#!/bin/sh\nfor a in "$@"; do printf '%s\\n' "$a"; done > "$(/usr/bin/dirname "$0")/log"\n${extra}\necho on-stdout\nexit ${code}\n`,
    { mode: 0o755 },
  );
  return path;
}

Deno.test({
  name: "the hook passes the check its arguments literally, and keeps stdout empty",
  ignore: TIMEOUT === null,
  async fn() {
    await withDir(async (dir) => {
      const { path } = installHook(
        dir,
        renderHookScript(settings([standIn(dir, 0), "run", "x y"])),
      );
      const vm = `a 'b' "c" $(touch ${dir}/pwned) \`id\``;
      const run = await runScript(path, [vm, "prepare", "begin", "-"]);
      assertEquals([run.code, run.stdout, run.stderr], [0, "", ""]);
      assertEquals(Deno.readTextFileSync(`${dir}/log`).split("\n").slice(0, -1), [
        "run",
        "x y",
        // The hook's own directory, for the "hook status" the check's refusals name.
        "--hooks-dir",
        dir,
        "--",
        vm,
        "prepare",
        "begin",
        "-",
      ]);
      assertThrows(() => Deno.statSync(`${dir}/pwned`));
    });
  },
});

Deno.test({
  name: "the hook's fast path exits 0 for every other operation without running the check",
  ignore: TIMEOUT === null,
  async fn() {
    await withDir(async (dir) => {
      const { path } = installHook(dir, renderHookScript(settings([standIn(dir, 1)])));
      for (
        const args of [
          ["prepare", "end"],
          ["start", "begin"],
          ["release", "end"],
          [
            "reconnect",
            "begin",
          ],
          ["migrate", "begin"],
          ["restore", "begin"],
          [],
        ]
      ) {
        const run = await runScript(path, ["vm", ...args, "-"]);
        assertEquals([run.code, run.stdout, run.stderr], [0, "", ""], args.join(" "));
      }
      assertThrows(() => Deno.statSync(`${dir}/log`));
    });
  },
});

Deno.test({
  name: "the hook names a file standing where deno run keeps the check's cache, and leaves a " +
    "compiled binary's failure to its own lines",
  ignore: TIMEOUT === null,
  async fn() {
    await withDir(async (dir) => {
      // The check failing as Deno does over such a file: exit 1.
      const check = standIn(dir, 1);
      const state = `${dir}/state`;
      Deno.writeTextFileSync(state, "not a directory\n");
      // Then the hook status to read, with this hook's directory quoted for the shell.
      const line = `passthrough guard: refusing to start "vm": its state directory ${state} is ` +
        "not a directory, so the check cannot run (Deno keeps its cache there); move that file " +
        `aside, and the next start makes the directory again; see "passthrough hook status `;
      for (
        const [command, stderr] of [
          [[check, "run", "hook_check.ts"], line],
          // A compiled binary: passthrough hook run.
          [[check, "hook", "run"], ""],
        ] as const
      ) {
        const script = renderHookScript({
          ...settings([...command]),
          env: { DENO_DIR: `${state}/deno`, HOME: `${state}/deno` },
          stateDir: state,
        });
        const { path } = installHook(dir, script);
        const run = await runScript(path, ["vm", "prepare", "begin", "-"]);
        assertEquals([run.code, run.stdout], [1, ""], command.join(" "));
        assertEquals(run.stderr.slice(0, stderr.length), stderr, command.join(" "));
        assertEquals(run.stderr === "", stderr === "", run.stderr);
      }
    });
  },
});

Deno.test({
  name:
    "the hook and hookFileProblems() name a file standing at a state directory written with a " +
    "trailing slash, whose Deno cache is under it",
  ignore: TIMEOUT === null,
  async fn() {
    await withDir(async (dir) => {
      const check = standIn(dir, 1);
      const state = `${dir}/state`;
      Deno.writeTextFileSync(state, "not a directory\n");
      // hook install keeps an absolute --state-dir as written (a shell's completion ends it with
      // "/"), and DENO_DIR joined under it: the cache's parent is that directory all the same.
      const hookSettings = {
        ...settings([check, "run", "hook_check.ts"]),
        env: { DENO_DIR: `${state}/deno`, HOME: `${state}/deno` },
        stateDir: `${state}/`,
      };
      const { path } = installHook(dir, renderHookScript(hookSettings));
      const run = await runScript(path, ["vm", "prepare", "begin", "-"]);
      assertEquals([run.code, run.stdout], [1, ""]);
      assertMatch(
        run.stderr,
        /^passthrough guard: refusing to start "vm": its state directory .* is not a directory/,
      );
      assertOk(run.stderr.includes(` its state directory ${state} is not`), run.stderr);
      const inspection = inspectHook(dir);
      assertEquals(inspection.cacheBlocked, state);
      const problems = hookFileProblems(inspection, "0.1.0", "passthrough hook install");
      // Moved aside beside it, not into itself (".../state/.aside").
      assertEquals(
        problems.find((p) => p.text.includes("is not a directory"))?.fix,
        `mv ${shellQuote(state)} ${shellQuote(`${state}.aside`)}`,
      );
    });
  },
});

Deno.test({
  name: "the hook refuses when the check refuses, cannot run, or misses its deadline",
  ignore: TIMEOUT === null,
  async fn() {
    await withDir(async (dir) => {
      const refuse = installHook(`${dir}/a`, renderHookScript(settings([standIn(dir, 1)])));
      assertEquals((await runScript(refuse.path, ["vm", "prepare", "begin", "-"])).code, 1);

      // The program it runs is gone (a clone moved or cleaned): the line names it and the fix.
      const missing = installHook(`${dir}/b`, renderHookScript(settings([`${dir}/gone`])));
      const gone = await runScript(missing.path, ["vm", "prepare", "begin", "-"]);
      assertEquals([gone.code, gone.stdout], [1, ""]);
      assertOk(
        gone.stderr.endsWith(
          `\npassthrough guard: refusing to start "vm": ${dir}/gone is missing (the check cannot ` +
            `run): restore it (scripts/setup.sh in passthrough's clone, or the Ansible playbook ` +
            `again); if passthrough moved, reinstall with "passthrough hook install --state-dir ` +
            `/var/lib/passthrough" from where it is now; if it was removed, remove this hook: rm ` +
            `${shellQuote(missing.path)}\n`,
        ),
        gone.stderr,
      );
      // With passthrough deleted, no "hook remove" is left to run: the rm it prints, as printed.
      const rm = await new Deno.Command("sh", {
        args: ["-c", gone.stderr.slice(gone.stderr.lastIndexOf(": rm ") + 2)],
      }).output();
      assertEquals(rm.code, 0);
      assertEquals(inspectHook(`${dir}/b`).present, false);
      installHook(`${dir}/b`, renderHookScript(settings([`${dir}/gone`])));
      // coreutils' own line first says which program is missing.
      assertMatch(gone.stderr, /^\S*timeout: failed to run command '.*\/gone'/);
      recordCase({
        area: "fault",
        name: "the program or check file the hook runs is gone (clone moved, cleaned, rebuilt)",
        count: 1,
        outcome: "start refused with a line naming the file and how to restore it",
        test: "tests/guard/hook_file_test.ts",
      });
      // There but not runnable: the reinstall it names keeps its own state directory (quoted).
      Deno.writeTextFileSync(`${dir}/not-runnable`, "");
      const stuck = installHook(
        `${dir}/b2`,
        renderHookScript({ ...settings([`${dir}/not-runnable`]), stateDir: `${dir}/state` }),
      );
      const denied = await runScript(stuck.path, ["vm", "prepare", "begin", "-"]);
      assertEquals([denied.code, denied.stdout], [1, ""]);
      assertOk(
        denied.stderr.includes(
          '\npassthrough guard: refusing to start "vm": cannot run the check (exit 126); ' +
            `reinstall with "passthrough hook install --state-dir ${shellQuote(`${dir}/state`)}"\n`,
        ),
        denied.stderr,
      );

      // A check past its deadline: its files are not looked at (a mount that hangs may be why),
      // so one named that is gone does not change the line.
      const slow = installHook(
        `${dir}/c`,
        renderHookScript(settings([standIn(dir, 0, "exec /bin/sleep 30"), `${dir}/gone`], 1)),
      );
      const late = await runScript(slow.path, ["vm", "prepare", "begin", "-"]);
      assertEquals([late.code, late.stdout], [1, ""]);
      // The "hook status" that reads this hook: it was "passthrough hook status", which reads
      // libvirt's default directory and says no hook is installed.
      // It says what can make the check slow and how to give it longer: hook status, which it
      // names, reports such a hook up to date.
      assertEquals(
        late.stderr,
        'passthrough guard: refusing to start "vm": the check did not finish within 1 s ' +
          "(failing closed): a heavily loaded host, or the first start after an install or a " +
          "Deno upgrade (the check is compiled then), can take longer; to give it longer: " +
          '"passthrough hook install --state-dir /var/lib/passthrough --deadline 30"; see ' +
          `"passthrough hook status --hooks-dir ${shellQuote(`${dir}/c`)}"\n`,
      );
      assertOk(late.ms >= 900 && late.ms < 5000, `${late.ms} ms`);

      // A check a signal ends (a crash): sh names the signal ("Segmentation fault"), then the
      // hook says what it means.
      const crash = installHook(
        `${dir}/d`,
        renderHookScript(settings([standIn(dir, 0, "kill -SEGV $$")])),
      );
      const crashed = await runScript(crash.path, ["vm", "prepare", "begin", "-"]);
      assertEquals([crashed.code, crashed.stdout], [1, ""]);
      assertMatch(
        crashed.stderr,
        /\npassthrough guard: refusing to start "vm": the check was ended by signal 11 \(failing closed\)\n$/,
      );
      // SIGKILL: timeout's second signal at the deadline, or the kernel's (out of memory).
      const oom = installHook(
        `${dir}/e`,
        renderHookScript(settings([standIn(dir, 0, "kill -KILL $$")])),
      );
      const killed = await runScript(oom.path, ["vm", "prepare", "begin", "-"]);
      assertEquals([killed.code, killed.stdout], [1, ""]);
      assertMatch(
        killed.stderr,
        /^passthrough guard: refusing to start "vm": the check was killed \(SIGKILL\): it did not finish within 10 s, or the system ended it \(out of memory\?\) \(failing closed\); if it was the deadline, give it longer: "passthrough hook install --state-dir \/var\/lib\/passthrough --deadline 30"; see "passthrough hook status --hooks-dir /m,
      );
      // A name with a terminal's escapes is not printed; one beyond ASCII is.
      const escape = await runScript(missing.path, ["a\x1b[2Jb", "prepare", "begin", "-"]);
      assertMatch(
        escape.stderr,
        /\npassthrough guard: refusing to start "\(a name with control characters\)": .* is missing/,
      );
      assertEquals(escape.stderr.includes("\x1b"), false);
      // C1 controls, a line separator, the bidirectional controls and the characters that show
      // nothing, as UTF-8, are not printed.
      for (
        const name of [
          "a\u009b2Jb",
          "a\u2028b",
          "a\u200fb",
          "a\u202eb",
          "a\u2067b",
          "a\u061cb",
          "win10\u200b",
          "a\u00adb",
          "a\u2060b",
          "a\u2064b",
          "\ufeffwin10",
          // The rest of the default-ignorable characters: tags (hidden ASCII), the combining
          // grapheme joiner, Hangul fillers, variation selectors but the emoji and text ones.
          "win10\u{e0067}\u{e0070}",
          "a\u034fb",
          "a\u115fb",
          "a\u1160b",
          "a\u17b5b",
          "a\u180eb",
          "a\u206ab",
          "a\u206fb",
          "a\u3164b",
          "a\ufe00b",
          "a\ufe0db",
          "a\uffa0b",
          "a\u{1bca3}b",
          "a\u{1d173}b",
          "a\u{e0fff}b",
        ]
      ) {
        const hidden = await runScript(missing.path, [name, "prepare", "begin", "-"]);
        assertMatch(hidden.stderr, /refusing to start "\(a name with control characters\)"/, name);
      }
      const accented = await runScript(missing.path, ["données", "prepare", "begin", "-"]);
      assertMatch(accented.stderr, /refusing to start "données": .* is missing/);
      // Letters beyond U+FFFF, a heart with its emoji selector and a joined emoji are printed.
      for (const name of ["\u{20000}vm", "\u2764\ufe0f", "\u{1f468}\u200d\u{1f4bb}", "\u{e1000}"]) {
        const shown = await runScript(missing.path, [name, "prepare", "begin", "-"]);
        assertEquals(shown.stderr.includes(`refusing to start "${name}": `), true, name);
      }
    });
  },
});

Deno.test("checkCommand() runs the check's own entry (a bundle's with --no-config), else the CLI's hook run", async () => {
  await withDir((dir) => {
    const options = { stateDir: "/var/lib/passthrough", sysfs: "/sys" };
    const tail = ["--state-dir", "/var/lib/passthrough", "--sysfs", "/sys"];
    const perms = [
      "--allow-ffi",
      "--allow-read=/var/lib/passthrough",
      "--allow-write=/var/lib/passthrough",
    ];
    const head = ["/usr/bin/deno", "run", "--quiet", "--no-prompt"];
    const command = (main: string) =>
      checkCommand({
        execPath: "/usr/bin/deno",
        mainModule: `file://${encodeURI(main)}`,
        standalone: false,
      }, options);
    const write = (path: string) => {
      Deno.mkdirSync(path.slice(0, path.lastIndexOf("/")), { recursive: true });
      Deno.writeTextFileSync(path, "");
    };
    // A checkout: the CLI and the check's state code need its deno.json for npm packages.
    write(`${dir}/co/main.ts`);
    write(`${dir}/co/deno.json`);
    assertEquals(command(`${dir}/co/main.ts`), [
      ...head,
      "--config",
      `${dir}/co/deno.json`,
      "--cached-only",
      ...perms,
      `${dir}/co/main.ts`,
      "hook",
      "run",
      ...tail,
    ]);
    write(`${dir}/co/cli/hook_check.ts`);
    assertEquals(command(`${dir}/co/main.ts`), [
      ...head,
      "--config",
      `${dir}/co/deno.json`,
      "--cached-only",
      "--v8-flags=--no-lazy,--no-sparkplug",
      "--allow-all",
      `${dir}/co/cli/hook_check.ts`,
      ...tail,
    ]);
    // A bundle, with and without the check beside it (deno task bundle, scripts/bundle_bin.sh).
    write(`${dir}/bin/main.js`);
    assertEquals(command(`${dir}/bin/main.js`), [
      ...head,
      "--no-config",
      "--cached-only",
      ...perms,
      `${dir}/bin/main.js`,
      "hook",
      "run",
      ...tail,
    ]);
    write(`${dir}/bin/hook/hook_check.js`);
    assertEquals(command(`${dir}/bin/main.js`), [
      ...head,
      "--no-config",
      "--cached-only",
      "--v8-flags=--no-lazy,--no-sparkplug",
      "--allow-all",
      `${dir}/bin/hook/hook_check.js`,
      ...tail,
    ]);
  });
});

Deno.test("installHook() writes mode 0755 atomically and reports no change the second time", async () => {
  await withDir((dir) => {
    const script = renderHookScript(settings(["/usr/bin/deno", "run", "/opt/main.ts"]));
    const first = installHook(`${dir}/qemu.d`, script);
    assertEquals(first, { path: `${dir}/qemu.d/${HOOK_FILE_NAME}`, changed: true });
    assertEquals(Deno.statSync(first.path).mode! & 0o7777, 0o755);
    assertEquals(installHook(`${dir}/qemu.d`, script).changed, false);
    Deno.chmodSync(first.path, 0o644);
    assertEquals(installHook(`${dir}/qemu.d`, script).changed, true);
    assertEquals(Deno.statSync(first.path).mode! & 0o7777, 0o755);
    assertEquals([...Deno.readDirSync(`${dir}/qemu.d`)].map((e) => e.name), [HOOK_FILE_NAME]);
    assertEquals(parseHookSettings(Deno.readTextFileSync(first.path))?.command[2], "/opt/main.ts");
  });
});

Deno.test("installHook() creates the hooks directory 0755 whatever the umask, and leaves an existing one as it is", async () => {
  await withDir((dir) => {
    const script = renderHookScript(settings(["/usr/bin/deno", "run", "/opt/main.ts"]));
    // root's umask 077: a qemu.d only root reads hides the hook from a non-root apply.
    const before = Deno.umask(0o077);
    try {
      installHook(`${dir}/hooks/qemu.d`, script);
      Deno.mkdirSync(`${dir}/own`, { mode: 0o700 });
      installHook(`${dir}/own`, script);
    } finally {
      Deno.umask(before);
    }
    const mode = (path: string) => Deno.statSync(path).mode! & 0o7777;
    assertEquals([mode(`${dir}/hooks`), mode(`${dir}/hooks/qemu.d`)], [0o755, 0o755]);
    assertEquals(mode(`${dir}/own`), 0o700);
  });
});

Deno.test("installHook() makes the hook executable only once it is whole, and removes an interrupted install's", async () => {
  await withDir((dir) => {
    const hooks = `${dir}/qemu.d`;
    Deno.mkdirSync(hooks);
    // What an install killed between its temporary file and the rename left (0755 before).
    const leftover = `${hooks}/.${HOOK_FILE_NAME}.1b4e28ba-2fa1-11d2-883f-0016d3cca427.tmp`;
    Deno.writeTextFileSync(leftover, "", { mode: 0o755 });
    assertEquals(inspectHook(hooks).leftovers, [leftover]);
    const script = renderHookScript(settings(["/usr/bin/deno", "run", "/opt/main.ts"]));
    // libvirt runs every executable in the directory, reading it at each call: the temporary
    // file, looked at just before it becomes executable, must be whole and not executable yet.
    const chmod = Deno.chmodSync;
    const seen: [number, string][] = [];
    Deno.chmodSync = (path: string | URL, mode: number) => {
      seen.push([Deno.statSync(path).mode! & 0o777, Deno.readTextFileSync(path)]);
      chmod(path, mode);
    };
    try {
      installHook(hooks, script);
    } finally {
      Deno.chmodSync = chmod;
    }
    assertEquals(seen, [[0o600, script]]);
    assertEquals([...Deno.readDirSync(hooks)].map((e) => e.name), [HOOK_FILE_NAME]);
    // An unchanged hook still clears what an interrupted install left.
    Deno.writeTextFileSync(leftover, "", { mode: 0o755 });
    assertEquals(installHook(hooks, script).changed, false);
    assertEquals(inspectHook(hooks).leftovers, []);
    recordCase({
      area: "fault",
      name: "hook install killed between its temporary file and the rename",
      count: 1,
      outcome:
        "the temporary file is never executable before it is whole; the next install removes it, doctor reports it",
      test: "tests/guard/hook_file_test.ts",
    });
  });
});

Deno.test("installHook() run at the same moment as another install or a remove still installs, whichever removes the other's temporary file", async () => {
  await withDir((dir) => {
    const hooks = `${dir}/qemu.d`;
    const script = renderHookScript(settings(["/usr/bin/deno", "run", "/opt/main.ts"]));
    // What another install (or a remove) does at the same moment: it takes this install's
    // staging directory for an interrupted install's leftover and removes it, just before this
    // one makes its hook executable; or it places its own hook and removes its staging
    // directory just after this one listed it as a leftover.
    const chmod = Deno.chmodSync;
    const remove = Deno.removeSync;
    let taken = 0;
    Deno.chmodSync = (path: string | URL, mode: number) => {
      if (taken++ === 0) {
        remove(String(path).slice(0, String(path).lastIndexOf("/")), { recursive: true });
      }
      chmod(path, mode);
    };
    const leftover = `${hooks}/.${HOOK_FILE_NAME}.1b4e28ba-2fa1-11d2-883f-0016d3cca427.tmp`;
    Deno.mkdirSync(leftover, { recursive: true });
    Deno.removeSync = (path: string | URL, options?: Deno.RemoveOptions) => {
      if (String(path) === leftover) remove(leftover, { recursive: true });
      remove(path, options);
    };
    try {
      assertEquals(installHook(hooks, script).changed, true);
      Deno.mkdirSync(leftover);
      assertEquals(removeHook(hooks), {
        removed: true,
        leftovers: [leftover],
      });
    } finally {
      Deno.chmodSync = chmod;
      Deno.removeSync = remove;
    }
    assertEquals(taken, 2);
    assertEquals([...Deno.readDirSync(hooks)].map((e) => e.name), []);
  });
});

Deno.test("removeHook() run at the same moment as another remove finds the hook gone, not an error", async () => {
  await withDir((dir) => {
    const hooks = `${dir}/qemu.d`;
    const script = renderHookScript(settings(["/usr/bin/deno", "run", "/opt/main.ts"]));
    const { path } = installHook(hooks, script);
    // The other remove deletes the hook between this one's read and its own delete.
    const remove = Deno.removeSync;
    Deno.removeSync = (target: string | URL, options?: Deno.RemoveOptions) => {
      if (String(target) === path) remove(path);
      remove(target, options);
    };
    try {
      assertEquals(removeHook(hooks), { removed: false, leftovers: [] });
    } finally {
      Deno.removeSync = remove;
    }
    assertEquals([...Deno.readDirSync(hooks)].map((e) => e.name), []);
  });
});

Deno.test("installHook() rewrites a hook another user owns; inspectHook() sees one changed by hand", async () => {
  await withDir((dir) => {
    const script = renderHookScript(settings(["/usr/bin/deno", "run", "/opt/main.ts"]));
    const { path } = installHook(dir, script, [0]);
    assertEquals(inspectHook(dir, [0]).intact, true);
    Deno.chownSync(path, 65534, 65534);
    assertEquals(installHook(dir, script, [0]).changed, true);
    assertEquals(Deno.statSync(path).uid, 0);
    // An exit 0 before the check turns the guard off: no longer what install writes.
    Deno.writeTextFileSync(
      path,
      script.replace('[ "$2" = prepare ]', 'exit 0\n[ "$2" = prepare ]'),
    );
    assertEquals(inspectHook(dir, [0]).intact, false);
  });
});

Deno.test("unsafeHookPaths() names what another user than root could change in what the hook runs", async () => {
  await withDir((dir) => {
    const clone = `${dir}/clone`;
    Deno.mkdirSync(`${clone}/dist/bin/hook`, { recursive: true });
    const entry = `${clone}/dist/bin/hook/hook_check.js`;
    Deno.writeTextFileSync(entry, "");
    Deno.writeTextFileSync(`${clone}/dist/bin/hook/chunk-A.js`, "");
    Deno.mkdirSync(`${dir}/qemu.d`);
    const hook = `${dir}/qemu.d/${HOOK_FILE_NAME}`;
    const hooked = (env: Record<string, string> = {}) => ({
      ...settings([TIMEOUT ?? "/usr/bin/timeout", "run", "--allow-all", entry, "--state-dir"]),
      env,
    });
    const unsafe = (env?: Record<string, string>) => unsafeHookPaths(hooked(env), hook, [0]);
    // The sticky /tmp above the clone's root-owned directories: none of it can be changed.
    assertEquals(unsafe(), []);
    // A chunk the entry loads, owned by another user; then the clone itself, group-writable.
    Deno.chownSync(`${clone}/dist/bin/hook/chunk-A.js`, 65534, 65534);
    assertEquals(unsafe(), [
      { text: `${clone}/dist/bin/hook/chunk-A.js belongs to uid 65534`, fix: null },
    ]);
    Deno.chownSync(`${clone}/dist/bin/hook/chunk-A.js`, 0, 0);
    Deno.chownSync(clone, 0, 100);
    Deno.chmodSync(clone, 0o775);
    // Each mode with the chmod that takes the access away (installing again is refused).
    assertEquals(unsafe(), [
      {
        text: `${clone} is writable by group 100 (mode 0775)`,
        fix: `chmod g-w ${shellQuote(clone)}`,
      },
    ]);
    Deno.chmodSync(clone, 0o755);
    // The hooks directory anyone may write to, even sticky: others could add a hook of theirs.
    Deno.chmodSync(`${dir}/qemu.d`, 0o1777);
    assertEquals(unsafe(), [{
      text: `${dir}/qemu.d is writable by anyone (mode 1777)`,
      fix: `chmod o-w ${shellQuote(`${dir}/qemu.d`)}`,
    }]);
    Deno.chownSync(`${dir}/qemu.d`, 0, 100);
    Deno.chmodSync(`${dir}/qemu.d`, 0o777);
    assertEquals(unsafe(), [{
      text: `${dir}/qemu.d is writable by anyone (mode 0777)`,
      fix: `chmod go-w ${shellQuote(`${dir}/qemu.d`)}`,
    }]);
    Deno.chmodSync(`${dir}/qemu.d`, 0o755);
    // Deno's cache in a shared directory: others could put modules in it before root does.
    Deno.mkdirSync(`${dir}/cache`, { mode: 0o1777 });
    Deno.chmodSync(`${dir}/cache`, 0o1777);
    assertEquals(unsafe({ DENO_DIR: `${dir}/cache` }), [{
      text: `${dir}/cache is writable by anyone (mode 1777)`,
      fix: `chmod o-w ${shellQuote(`${dir}/cache`)}`,
    }]);
    // A link to a file another user owns: where it leads counts.
    Deno.writeTextFileSync(`${dir}/theirs.js`, "");
    Deno.chownSync(`${dir}/theirs.js`, 65534, 65534);
    Deno.removeSync(entry);
    Deno.symlinkSync(`${dir}/theirs.js`, entry);
    assertEquals(unsafe(), [{ text: `${dir}/theirs.js belongs to uid 65534`, fix: null }]);
    Deno.removeSync(entry);
    Deno.writeTextFileSync(entry, "");
    // The state directory under a directory another user owns: they could swap in a policy
    // file that turns the guard off.
    Deno.mkdirSync(`${dir}/home/state`, { recursive: true });
    Deno.chownSync(`${dir}/home`, 65534, 65534);
    assertEquals(
      unsafeHookPaths({ ...hooked(), stateDir: `${dir}/home/state` }, hook, [0]),
      [{ text: `${dir}/home belongs to uid 65534`, fix: null }],
    );
    // One not made yet, behind root's link into that directory: where it would land counts.
    Deno.symlinkSync(`${dir}/home`, `${dir}/link`);
    for (const stateDir of [`${dir}/link/new`, `${dir}/link/new/deeper/`]) {
      assertEquals(unsafeHookPaths({ ...hooked(), stateDir }, hook, [0]), [
        { text: `${dir}/home belongs to uid 65534`, fix: null },
      ]);
    }
    recordCase({
      area: "security",
      name:
        "what the root-run hook runs or obeys changeable by another user (a chunk, a group-writable clone, a world-writable hooks directory or Deno cache, a link to a user's file, a state directory under a user's directory)",
      count: 6,
      outcome: "named; hook install refuses, hook status and doctor report it",
      test: "tests/guard/hook_file_test.ts",
    });
  });
});

Deno.test("inspectHook() reports a missing program and a hook libvirt would skip", async () => {
  await withDir((dir) => {
    const { path } = installHook(dir, renderHookScript(settings([`${dir}/deno`, "run"])));
    let seen = inspectHook(dir);
    assertEquals([seen.present, seen.executable], [true, true]);
    assertEquals(seen.programs.map((p) => [p.path, p.exists]), [
      [TIMEOUT ?? "/usr/bin/timeout", TIMEOUT !== null],
      [`${dir}/deno`, false],
    ]);
    Deno.chmodSync(path, 0o644);
    seen = inspectHook(dir);
    assertEquals(seen.executable, false);
  });
});

Deno.test("removeHook() removes our hook and refuses anyone else's file", async () => {
  await withDir((dir) => {
    assertEquals(removeHook(dir), { removed: false, leftovers: [] });
    installHook(dir, renderHookScript(settings(["/bin/true"])));
    assertEquals(removeHook(dir), { removed: true, leftovers: [] });
    assertEquals(inspectHook(dir).present, false);
    Deno.writeTextFileSync(`${dir}/${HOOK_FILE_NAME}`, "#!/bin/sh\nexit 0\n");
    assertThrows(() => removeHook(dir), /not a passthrough hook/);
  });
});

Deno.test("removeHook() removes a whole hook an interrupted install left, which libvirt would run", async () => {
  await withDir((dir) => {
    const script = renderHookScript(settings(["/bin/false"]));
    installHook(dir, script);
    // Killed between the chmod and the rename: an executable hook libvirt runs at every start.
    const leftover = `${dir}/.${HOOK_FILE_NAME}.0c5e.tmp`;
    Deno.writeTextFileSync(leftover, script, { mode: 0o755 });
    assertEquals(removeHook(dir), { removed: true, leftovers: [leftover] });
    assertEquals([...Deno.readDirSync(dir)], []);
    // With the hook itself already removed.
    Deno.writeTextFileSync(leftover, script, { mode: 0o755 });
    assertEquals(removeHook(dir), { removed: false, leftovers: [leftover] });
    assertEquals([...Deno.readDirSync(dir)], []);
  });
});

Deno.test("installHook() refuses a user's own hook, or a link to one, and replaces a passthrough hook of any format", async () => {
  await withDir((dir) => {
    const path = `${dir}/${HOOK_FILE_NAME}`;
    const script = renderHookScript(settings(["/bin/true"]));
    const theirs = '#!/bin/sh\n# my own hook\nlogger "vm $1 $2"\n';
    Deno.writeTextFileSync(`${dir}/mine`, theirs, { mode: 0o755 });
    const plants: [string, () => void][] = [
      ["a user's own hook", () => Deno.copyFileSync(`${dir}/mine`, path)],
      ["a link to one", () => Deno.symlinkSync(`${dir}/mine`, path)],
    ];
    for (const [what, plant] of plants) {
      plant();
      const mv = `mv ${shellQuote(path)} ${shellQuote(`${dir}/50-own-hook`)}`;
      assertThrows(
        () => installHook(dir, script),
        Error,
        `Refusing to install the start guard over "${path}": it is not a passthrough hook: ` +
          `rename it (libvirt runs every executable in ${dir}: ${mv}) or move it out of ${dir}, ` +
          `then install again`,
      );
      assertEquals(Deno.readTextFileSync(path), theirs, what);
      assertEquals([...Deno.readDirSync(dir)].map((e) => e.name).sort(), [HOOK_FILE_NAME, "mine"]);
      Deno.removeSync(path);
    }
    // A passthrough hook written by an older passthrough (no format line) is replaced.
    Deno.writeTextFileSync(path, script.replace(/^# passthrough-hook-format: \d+\n/m, ""));
    assertEquals(installHook(dir, script).changed, true);
    assertEquals(Deno.readTextFileSync(path), script);
  });
});

Deno.test("remove, status and install refuse a FIFO, a link to /dev/zero or a huge file without reading it", async () => {
  await withDir((dir) => {
    const path = `${dir}/${HOOK_FILE_NAME}`;
    const plants: [string, () => void][] = [
      ["a FIFO", () => new Deno.Command("mkfifo", { args: [path] }).outputSync()],
      ["a link to /dev/zero", () => Deno.symlinkSync("/dev/zero", path)],
      ["a 1 GiB file", () => {
        Deno.writeTextFileSync(path, "#!/bin/sh\n");
        Deno.truncateSync(path, 1024 ** 3);
      }],
    ];
    for (const [what, plant] of plants) {
      plant();
      // Each would block for ever on the FIFO, or read without end or a gigabyte.
      assertThrows(() => removeHook(dir), /Refusing ".*": it /, what);
      assertThrows(() => installHook(dir, "#!/bin/sh\n"), /: it is not a passthrough hook: /, what);
      const seen = inspectHook(dir);
      assertEquals([seen.present, seen.settings], [true, null], what);
      Deno.removeSync(path);
    }
    recordCase({
      area: "fault",
      name: "installed hook planted as a FIFO, a symlink to /dev/zero, a 1 GiB file",
      count: 3,
      outcome: "hook remove refuses it by name, hook status reports it as not ours; nothing read",
      test: "tests/guard/hook_file_test.ts",
    });
  });
});

Deno.test("findHookDaemons() trusts a pidfile only when /proc names the daemon", async () => {
  await withDir((dir) => {
    Deno.mkdirSync(`${dir}/run`);
    Deno.mkdirSync(`${dir}/proc/4242`, { recursive: true });
    Deno.mkdirSync(`${dir}/proc/4343`, { recursive: true });
    Deno.writeTextFileSync(`${dir}/run/libvirtd.pid`, "4242\n");
    Deno.writeTextFileSync(`${dir}/run/virtqemud.pid`, "4343\n");
    Deno.writeTextFileSync(`${dir}/proc/4242/comm`, "libvirtd\n");
    Deno.writeTextFileSync(
      `${dir}/proc/4242/stat`,
      "4242 (libvirtd) S 1 4242 4242 0 -1 4194624 1 0 0 0 0 0 0 0 20 0 17 0 12345 0 0\n",
    );
    // A stale pidfile whose number now belongs to another program.
    Deno.writeTextFileSync(`${dir}/proc/4343/comm`, "sshd\n");
    Deno.writeTextFileSync(`${dir}/proc/stat`, "cpu 1 2 3\nbtime 1700000000\n");
    const daemons = findHookDaemons(denoFsReader(), {
      runDir: `${dir}/run`,
      procRoot: `${dir}/proc`,
    });
    assertEquals(daemons, [{ name: "libvirtd", pid: 4242, started: 1700000123.45 }]);
    const signalled: number[] = [];
    const outcomes = reloadDaemons(daemons, (pid) => void signalled.push(pid));
    assertEquals(signalled, [4242]);
    assertMatch(outcomes[0]!.message, /^Reloaded libvirtd \(pid 4242\) with SIGHUP/);
    const failed = reloadDaemons(daemons, () => {
      throw new Error("EPERM");
    });
    assertEquals(failed[0]!.reloaded, false);
    assertMatch(failed[0]!.message, /run: systemctl reload libvirtd \(or kill -HUP 4242\)$/);
    // A pidfile holding anything but a decimal number is not read as one (0x10a2 is 4258).
    Deno.writeTextFileSync(`${dir}/run/virtqemud.pid`, "0x10a2\n");
    Deno.mkdirSync(`${dir}/proc/4258`);
    Deno.writeTextFileSync(`${dir}/proc/4258/comm`, "virtqemud\n");
    // Without the boot time in /proc/stat the start time is unknown, and the daemon still found.
    Deno.writeTextFileSync(`${dir}/proc/stat`, "cpu 1 2 3\n");
    assertEquals(
      findHookDaemons(denoFsReader(), { runDir: `${dir}/run`, procRoot: `${dir}/proc` }),
      [
        { name: "libvirtd", pid: 4242, started: null },
      ],
    );
    // A big server's /proc/stat: a line per CPU and the interrupt counts before btime, far past
    // 64 KiB.
    const cpus = Array.from({ length: 512 }, (_, i) => `cpu${i} 1 2 3 4 5 6 7 8 9 10\n`).join("");
    const intr = `intr ${Array.from({ length: 12000 }, (_, i) => i).join(" ")}\n`;
    Deno.writeTextFileSync(`${dir}/proc/stat`, `cpu 1 2 3\n${cpus}${intr}btime 1700000000\n`);
    assertEquals(Deno.statSync(`${dir}/proc/stat`).size > 65536, true);
    assertEquals(
      findHookDaemons(denoFsReader(), { runDir: `${dir}/run`, procRoot: `${dir}/proc` }),
      [{ name: "libvirtd", pid: 4242, started: 1700000123.45 }],
    );
    assertEquals(
      noDaemonMessage(),
      "No running libvirtd or virtqemud found (pidfiles /run/libvirtd.pid, /run/virtqemud.pid): " +
        "the daemon runs the hook from its next start",
    );
  });
});

Deno.test("reloadDaemons() says a virtqemud that exited since it was found runs the hook from its next start", async () => {
  await withDir(async (dir) => {
    // A real process named virtqemud (/proc/PID/comm is the name exec was given), as systemd
    // runs it: socket-activated with --timeout 120, it ends when idle and removes its pidfile. A
    // link, not a copy: a copy just written can fail to exec (ETXTBSY) while any thread forks.
    const binary = `${dir}/virtqemud`;
    Deno.symlinkSync("/usr/bin/sleep", binary);
    const child = new Deno.Command(binary, { args: ["600"], stdout: "null", stderr: "null" })
      .spawn();
    try {
      Deno.writeTextFileSync(`${dir}/virtqemud.pid`, `${child.pid}\n`);
      // spawn() returns once the child is forked; until it has exec'd, its comm is still deno's
      // (seen on a loaded machine), so wait for the name exec gives it.
      for (let i = 0; i < 500; i++) {
        const comm = Deno.readTextFileSync(`/proc/${child.pid}/comm`).trim();
        if (comm === "virtqemud") break;
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      const daemons = findHookDaemons(libcSysfsReader(), { runDir: dir });
      assertEquals(daemons.map((d) => [d.name, d.pid]), [["virtqemud", child.pid]]);
      child.kill("SIGTERM");
      await child.status;
      const [outcome] = reloadDaemons(daemons, (pid) => signalProcess(pid, 1 /* SIGHUP */));
      assertEquals(outcome?.reloaded, false);
      assertEquals(
        outcome?.message,
        `virtqemud (pid ${child.pid}) exited before it could be reloaded: it runs the hook ` +
          `from its next start`,
      );
      // Gone with its pidfile: not found, and install says the next start reads the hook.
      Deno.removeSync(`${dir}/virtqemud.pid`);
      assertEquals(findHookDaemons(libcSysfsReader(), { runDir: dir }), []);
    } finally {
      try {
        child.kill("SIGKILL");
        await child.status;
      } catch {
        // Already reaped above.
      }
    }
  });
});

Deno.test("installHook() killed at any step leaves no executable file in the hooks directory, and the next install removes what it left", async () => {
  await withDir(async (dir) => {
    const hooks = `${dir}/qemu.d`;
    const script = renderHookScript(settings(["/usr/bin/deno", "run", "/opt/main.ts"]));
    // libvirt runs every executable regular file in the directory (dot files too), not what is
    // in a subdirectory. Killed just before the rename, the whole hook was left there, 0755.
    for (const step of ["chmodSync", "renameSync"] as const) {
      const code = `import { installHook } from ${
        JSON.stringify(new URL("../../lib/guard/hook_file.ts", import.meta.url).href)
      };
        const real = Deno.${step};
        Deno.${step} = (...args) => {
          if (${
        // The hook's chmod, not the new hooks directory's.
        step === "chmodSync"
          ? "String(args[0]).endsWith('.tmp/50-passthrough-guard')"
          : "String(args[1]).endsWith('/50-passthrough-guard')"}) Deno.kill(Deno.pid, "SIGKILL");
          return real(...args);
        };
        installHook(${JSON.stringify(hooks)}, ${JSON.stringify(script)});`;
      const killed = await new Deno.Command(Deno.execPath(), {
        args: ["eval", code],
        stdout: "null",
        stderr: "piped",
      }).output();
      assertEquals(killed.signal, "SIGKILL", new TextDecoder().decode(killed.stderr));
      const runnable = [...Deno.readDirSync(hooks)].filter((e) =>
        e.isFile && (Deno.statSync(`${hooks}/${e.name}`).mode! & 0o111) !== 0
      ).map((e) => e.name);
      assertEquals(runnable, [], `killed at ${step}`);
      // What it left, which the next install removes.
      assertMatch(
        [...Deno.readDirSync(hooks)].map((e) => e.name).join(),
        /^\.50-passthrough-guard\.[^,]*\.tmp$/,
      );
      assertEquals(installHook(hooks, script).changed, true);
      assertEquals([...Deno.readDirSync(hooks)].map((e) => e.name), [HOOK_FILE_NAME]);
      assertEquals(removeHook(hooks).removed, true);
    }
  });
});

Deno.test("guardStateDirFor() keeps a test world's or a session's guard files out of the state directory a hook would read once installed", () => {
  // With no hook installed yet, an apply over the test driver recorded its config's policies
  // (guard: off) in /var/lib/passthrough, where `sudo passthrough hook install` then pointed the
  // hook: the host's VM of the same UUID started unchecked, after a rehearsal.
  const hooksDir = Deno.makeTempDirSync({ prefix: "passthrough-no-hook-" });
  try {
    const env = () => undefined;
    for (const uri of ["test:///tmp/world.xml", "qemu:///session"]) {
      assertEquals(guardStateDirFor(uri, undefined, env, { hooksDir }), null, uri);
      assertEquals(guardStateDirFor(uri, "/var/lib/passthrough/", env, { hooksDir }), null, uri);
      // Another directory is the rehearsal's own.
      assertEquals(
        guardStateDirFor(uri, "/tmp/rehearsal", env, { hooksDir })?.stateDir,
        "/tmp/rehearsal",
      );
    }
    // The system daemon's VMs: where a hook installed by default will read.
    assertEquals(
      guardStateDirFor("qemu:///system", undefined, env, { hooksDir })?.stateDir,
      "/var/lib/passthrough",
    );
  } finally {
    Deno.removeSync(hooksDir, { recursive: true });
  }
});
