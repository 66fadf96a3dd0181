/**
 * Runs the real CLI as a user does: a separate `deno run` process with exactly the permission
 * flags README documents (read from `bin/passthrough`, the one place they are written), with or
 * without a real pseudo-terminal (`script` from util-linux).
 *
 * @module
 */

const ROOT = new URL("../../", import.meta.url).pathname;
/** Absolute path of `main.ts`. */
export const MAIN = `${ROOT}main.ts`;

/** The `--allow-*` and `--no-prompt` flags of `bin/passthrough`, so tests prove the documented set suffices. */
export function documentedFlags(): string[] {
  const wrapper = Deno.readTextFileSync(`${ROOT}bin/passthrough`);
  const flags = [...wrapper.matchAll(/(--no-prompt|--allow-[a-z-]+(?:=[^\s\\]+)?)/g)].map((m) =>
    m[1]!
  );
  if (flags.length === 0) throw new Error("No --allow flags found in bin/passthrough");
  return flags;
}

/** The `--v8-flags=...` of `bin/passthrough`, which the Ansible playbook runs the bundle with too. */
export function wrapperV8Flags(): string {
  const wrapper = Deno.readTextFileSync(`${ROOT}bin/passthrough`);
  const flags = /(--v8-flags=[^\s\\]+)/.exec(wrapper)?.[1];
  if (flags === undefined) throw new Error("No --v8-flags found in bin/passthrough");
  return flags;
}

/**
 * Runs `deno task bundle` as deno.json writes it (each `deno bundle` of the task, in the
 * checkout), with its outputs under `dir` instead of `dist/`: `dir/passthrough.js`, `dir/hook/`.
 */
export async function bundleAsTask(dir: string): Promise<void> {
  const tasks = JSON.parse(Deno.readTextFileSync(`${ROOT}deno.json`)).tasks;
  for (const part of (tasks.bundle.command as string).split("&&")) {
    const [program, ...words] = part.trim().split(/\s+/);
    if (program !== "deno" || words[0] !== "bundle") {
      throw new Error(`deno task bundle runs more than deno bundle: "${part.trim()}"`);
    }
    const args = words.map((w) => w.startsWith("dist/") ? `${dir}/${w.slice("dist/".length)}` : w);
    const output = await new Deno.Command(Deno.execPath(), {
      args,
      cwd: ROOT,
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!output.success) {
      throw new Error(`deno ${args.join(" ")}: ${new TextDecoder().decode(output.stderr)}`);
    }
  }
}

/** The outcome of one CLI run. */
export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** How to spawn the CLI. */
export interface CliOptions {
  /** Deno permission flags; the documented set ({@link documentedFlags}) unless given (e.g. `-A`). */
  flags?: string[];
  /** Environment added to `NO_COLOR=1`. */
  env?: Record<string, string>;
  /** The script to run instead of the checkout's `main.ts` (e.g. the bundled CLI). */
  main?: string;
  /** The working directory; the test's own unless given. */
  cwd?: string;
}

/**
 * Runs `passthrough ARGS` with the documented flags, `stdin` as input, colour off; `wrap`: a
 * command the CLI's is the arguments of (`unshare -m ...`).
 */
export async function runCli(
  args: string[],
  options: CliOptions & { stdin?: string; wrap?: string[] } = {},
): Promise<CliResult> {
  const [program = Deno.execPath(), ...before] = [...(options.wrap ?? []), Deno.execPath()];
  const child = new Deno.Command(program, {
    args: [
      ...before,
      "run",
      "--quiet",
      ...(options.flags ?? documentedFlags()),
      options.main ?? MAIN,
      ...args,
    ],
    ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1", ...options.env },
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(options.stdin ?? ""));
  await writer.close();
  const out = await child.output();
  const decode = (b: Uint8Array) => new TextDecoder().decode(b);
  return { code: out.code, stdout: decode(out.stdout), stderr: decode(out.stderr) };
}

/** `passthrough apply --yes` of the config at `config` over the tree at `sysfs`, on `connect`. */
export function applyYes(
  config: string,
  sysfs: string,
  connect: string,
  stateDir: string,
): Promise<CliResult> {
  return runCli([
    "apply",
    "--yes",
    "--config",
    config,
    "--sysfs",
    sysfs,
    "--connect",
    connect,
    "--state-dir",
    stateDir,
  ]);
}

/** Whether util-linux `script` is here to provide a pseudo-terminal. */
export function hasScript(): boolean {
  try {
    return new Deno.Command("script", { args: ["--version"], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}

/**
 * A CLI run on a real pseudo-terminal. The test reads the screen as it comes and answers prompts
 * when they appear, so it can act between a prompt and its answer.
 */
export interface PtySession extends AsyncDisposable {
  /** Resolves with everything printed so far once `pattern` has appeared (rejects at exit). */
  waitFor(pattern: RegExp): Promise<string>;
  /** Types `text` into the terminal. */
  type(text: string): Promise<void>;
  /** Closes the input and waits for the exit; returns the code and the whole screen. */
  finish(): Promise<{ code: number; screen: string }>;
  /**
   * Waits for the exit with the input left open (as a user who answered and waits); rejects when
   * the program has not exited after `ms` milliseconds.
   */
  exited(ms: number): Promise<{ code: number; screen: string }>;
}

/**
 * Starts `passthrough ARGS` on a pseudo-terminal (`script` from util-linux); `shell`: commands the
 * shell runs first, in the process that then becomes the CLI (`exec`), e.g. `trap '' HUP` as
 * `nohup` does; `wrap`: a command the CLI's is the arguments of (`unshare -m ...`).
 */
export function runCliOnPty(
  args: string[],
  options: CliOptions & { shell?: string; wrap?: string[] } = {},
): PtySession {
  const quote = (a: string) => `'${a.replaceAll("'", "'\\''")}'`;
  const flags = options.flags ?? documentedFlags();
  const command = [
    ...(options.wrap ?? []),
    Deno.execPath(),
    "run",
    "--quiet",
    ...flags,
    options.main ?? MAIN,
    ...args,
  ].map(quote).join(" ");
  const line = options.shell === undefined ? command : `${options.shell}; exec ${command}`;
  const child = new Deno.Command("script", {
    ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
    args: ["-q", "-e", "-c", line, "/dev/null"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1", ...options.env },
  }).spawn();
  const writer = child.stdin.getWriter();
  let screen = "";
  let exited = false;
  const waiters: { pattern: RegExp; resolve: (s: string) => void; reject: (e: Error) => void }[] =
    [];
  const settle = () => {
    for (const w of [...waiters]) {
      if (w.pattern.test(screen)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(screen);
      } else if (exited) {
        waiters.splice(waiters.indexOf(w), 1);
        w.reject(new Error(`Exited before ${w.pattern} appeared; screen:\n${screen}`));
      }
    }
  };
  const pump = (async () => {
    const decoder = new TextDecoder();
    for await (const chunk of child.stdout) {
      screen += decoder.decode(chunk, { stream: true });
      settle();
    }
  })();
  const status = child.status.then(async (s) => {
    await pump;
    exited = true;
    settle();
    return s;
  });
  const stderrDone = new Response(child.stderr).text();
  let closed = false;
  const close = async () => {
    if (!closed) {
      closed = true;
      await writer.close().catch(() => {});
    }
  };
  return {
    waitFor(pattern) {
      return new Promise((resolve, reject) => {
        waiters.push({ pattern, resolve, reject });
        settle();
      });
    },
    async type(text) {
      await writer.write(new TextEncoder().encode(text));
    },
    async finish() {
      await close();
      const s = await status;
      await stderrDone;
      return { code: s.code, screen };
    },
    async exited(ms) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const late = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () =>
            reject(new Error(`Still running ${ms} ms after the last answer; screen:\n${screen}`)),
          ms,
        );
      });
      try {
        const s = await Promise.race([status, late]);
        await stderrDone;
        return { code: s.code, screen };
      } finally {
        clearTimeout(timer);
      }
    },
    async [Symbol.asyncDispose]() {
      await close();
      if (!exited) {
        try {
          child.kill("SIGKILL");
        } catch { /* already gone */ }
      }
      await status;
      await stderrDone;
    },
  };
}

/** Runs the installed hook as libvirt does (minimal environment), with `xml` on stdin. */
export async function runHook(
  hook: string,
  args: string[],
  xml: string,
  env: Record<string, string> = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = new Deno.Command(hook, {
    args,
    clearEnv: true,
    env: { LC_ALL: "C", PATH: "/usr/bin:/bin", ...env },
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  // The fast path exits without reading: a closed pipe is what libvirt sees too.
  await writer.write(new TextEncoder().encode(xml)).catch(() => {});
  await writer.close().catch(() => {});
  const out = await child.output();
  const decode = (b: Uint8Array) => new TextDecoder().decode(b);
  return { code: out.code, stdout: decode(out.stdout), stderr: decode(out.stderr) };
}

/** The CLI's command line as {@link runCli} runs it, for another runner. */
export function cliCommand(): string[] {
  return [Deno.execPath(), "run", "--quiet", ...documentedFlags(), MAIN];
}

/**
 * Runs `command` in a private mount namespace once the `sh` commands of `setup` (mounts, and
 * what goes into them) succeeded: for tests that need their own `/etc`, `/run` or `/sys/fs`
 * paths, which end with the command. See {@link canUnshareMounts}.
 */
export async function runInPrivateMounts(
  setup: string,
  command: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command("unshare", {
    args: ["-m", "--propagation", "private", "sh", "-c", `${setup} && exec "$@"`, "sh", ...command],
    env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decode = (b: Uint8Array) => new TextDecoder().decode(b);
  return { code: out.code, stdout: decode(out.stdout), stderr: decode(out.stderr) };
}

/** Whether `unshare -m` can make a private mount namespace here (root, no seccomp block). */
export function canUnshareMounts(): boolean {
  try {
    return new Deno.Command("unshare", {
      args: ["-m", "--propagation", "private", "true"],
      stdout: "null",
      stderr: "null",
    }).outputSync().success;
  } catch {
    return false;
  }
}

/**
 * Lets every user read `paths` and what is in them (`chmod -R go+rX`), for what a test hands to
 * another user: created under the umask the suite runs with, 077 leaves it root's alone.
 */
export async function openToAll(...paths: string[]): Promise<void> {
  const out = await new Deno.Command("chmod", {
    args: ["-R", "go+rX", "--", ...paths],
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new Error(`chmod -R go+rX failed: ${new TextDecoder().decode(out.stderr).trim()}`);
  }
}
