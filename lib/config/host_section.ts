/**
 * One config shared by several hosts (the top-level `hosts:`): a process plans exactly one host,
 * the section named by `--host NAME` or, by default, this machine's host name. This module picks
 * that section and cuts the config down to the VMs and rules that apply there. A fleet is many
 * processes, one per host (see `ansible/passthrough.yml`), never many hosts in one process.
 *
 * @module
 */

import { sameNameSuggestion } from "../render/suggest.ts";
import type { Config, HostConfig, VmConfig } from "./config.ts";
import { CONFIG_SCHEMA } from "./schema.ts";

/** How the host section was chosen: by `--host NAME` or by this machine's host name. */
export type HostPick = "flag" | "hostname";

/** A config with `hosts:` that has no section for the host being planned. */
export class UnknownHostError extends Error {
  /** The error's name. */
  override name = "UnknownHostError";
  /** The name looked for. */
  host: string;
  /** How that name was chosen; `null` when a library caller named it ({@link configForHost}). */
  pick: HostPick | null;
  /** The command-line option that names a host (`--host`); `null` where none does (a library script). */
  option: string | null;
  /** The hosts the config declares, in file order. */
  known: string[];

  /**
   * Builds the error for `config`, whose `hosts:` does not declare `host`; `option`: the
   * command-line option that names a host, which the message then names.
   */
  constructor(
    config: Pick<Config, "file" | "hosts" | "hostsLocation">,
    host: string,
    options: { pick: HostPick | null; option?: string | null },
  ) {
    const { pick, option = null } = options;
    const known = (config.hosts ?? []).map((h) => h.name);
    // Only a process with an option to pass can be told to pass it instead. The kernel's node
    // name is what `uname -n` prints, and what a user checks against the section's name.
    const why = pick === "hostname"
      ? " (this machine's host name, as uname -n prints it)"
      : pick === "flag" && option !== null
      ? ` (${option})`
      : "";
    const at = config.hostsLocation === undefined ? "" : ` at ${config.hostsLocation}`;
    const hint = sameNameSuggestion(host, known) ?? domainSuggestion(host, known);
    super(
      `${config.file} has no section for host "${host}"${why} under "hosts:"${at}${
        hint === null ? "" : ` (${hint})`
      }: it declares ${known.map((k) => `"${k}"`).join(", ")}: ${addSection(host, option)}`,
    );
    this.host = host;
    this.pick = pick;
    this.option = option;
    this.known = known;
  }
}

const { keyPattern, keyHint } = CONFIG_SCHEMA.properties.hosts;

/** The way out: `option`, or a section named `host` where the config takes that name. */
function addSection(host: string, option: string | null): string {
  const pass = option === null ? "" : `pass ${option} NAME`;
  // A name with a space or a slash (a shell variable's trailing space) is no section's: the
  // config would refuse the section this would tell the user to add.
  if (!new RegExp(keyPattern).test(host)) {
    return `${pass}${pass === "" ? "" : "; "}"${host}" cannot name a section (${keyHint})`;
  }
  return `${pass}${pass === "" ? "" : ", or "}add a section named "${host}"`;
}

/** `name` as DNS compares it: without the root's trailing dot, in one case. */
function bare(name: string): string {
  return name.replace(/\.$/, "").toLowerCase();
}

function firstLabel(name: string): string {
  return name.slice(0, (name + ".").indexOf("."));
}

/**
 * The one declared section that is `host` with its domain cut off or added (`hv1` for
 * `hv1.example.com`, `hv1.example.com` for `hv1`), or with DNS's trailing dot (`hv1.example.com`
 * for `hv1.example.com.`): the same machine named two ways, which a name matched whole never
 * picks. A section of another domain (`hv1.lab.example` for `hv1.example.com`) may be another
 * machine, and is not suggested.
 */
function domainSuggestion(host: string, known: string[]): string | null {
  const name = bare(host);
  const same = known.filter((k) => {
    const section = bare(k);
    return section === name ||
      (firstLabel(section) === firstLabel(name) && section.includes(".") !== name.includes("."));
  });
  return same.length === 1
    ? `did you mean "${same[0]}"? a host name matches a section only whole, with its domain`
    : null;
}

/** The host section a process plans, and the config as it applies on that host. */
export interface PickedHost {
  /** The section under `hosts:`. */
  host: HostConfig;
  /** How it was chosen. */
  pick: HostPick;
  /** The config cut down to this host ({@link configForHost}). */
  config: Config;
}

/**
 * The section of `config` for this process: the one named `flag` when given, else the one named
 * `hostname()` (called only then). `null` for a config without `hosts:`. Throws
 * {@link UnknownHostError} when no section has that name, which names `option` (the command-line
 * option `flag` comes from, `--host`) where given.
 *
 * @example
 * ```ts
 * import { parseConfig } from "./config.ts";
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const config = parseConfig(
 *   "version: 1\nhosts: { hv1: {}, hv2: {} }\nvms: { a: { host: hv2, devices: [] } }\n",
 *   { file: "fleet.yaml" },
 * );
 * const picked = pickHostSection(config, { hostname: () => "hv2" });
 * assertEquals([picked?.host.name, picked?.pick, picked?.config.vms.length], ["hv2", "hostname", 1]);
 * assertEquals(pickHostSection(config, { flag: "hv1", hostname: () => "hv2" })?.config.vms, []);
 * ```
 */
export function pickHostSection(
  config: Config,
  options: { flag?: string | undefined; hostname: () => string; option?: string },
): PickedHost | null {
  if (config.hosts === undefined) return null;
  const pick: HostPick = options.flag !== undefined ? "flag" : "hostname";
  const name = options.flag ?? options.hostname();
  const host = config.hosts.find((h) => h.name === name);
  if (host === undefined) {
    throw new UnknownHostError(config, name, { pick, option: options.option ?? null });
  }
  return { host, pick, config: configForHost(config, name) };
}

function onHost(entry: { hosts?: string[] }, host: string): boolean {
  return entry.hosts === undefined || entry.hosts.includes(host);
}

/**
 * The config one host is planned with: the VMs that name it (or name no host), each with the
 * rules that name it (or name no host), and no `hosts:`. A VM kept with no rule left is planned
 * with none, which removes the hostdevs passthrough added to it earlier on that host. Throws
 * {@link UnknownHostError} when `hosts:` declares no host named `host`.
 *
 * @example
 * ```ts
 * import { parseConfig } from "./config.ts";
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const config = parseConfig(`version: 1
 * hosts: { a: {}, b: {} }
 * vms:
 *   render: { host: a, devices: [{ match: { class: vga } }] }
 *   build: { devices: [{ match: { class: nvme } }, { match: { class: usb }, host: b }] }
 * `, { file: "fleet.yaml" });
 * assertEquals(configForHost(config, "a").vms.map((vm) => vm.name), ["render", "build"]);
 * assertEquals(configForHost(config, "b").vms.map((vm) => vm.rules.length), [2]);
 * ```
 */
export function configForHost(config: Config, host: string): Config {
  // A name `hosts:` does not declare (a typo) would keep the VMs that name no host with none of
  // their rules for the declared hosts, and a plan of that removes their hostdevs.
  if (config.hosts !== undefined && !config.hosts.some((h) => h.name === host)) {
    throw new UnknownHostError(config, host, { pick: null });
  }
  const vms: VmConfig[] = config.vms
    .filter((vm) => onHost(vm, host))
    .map((vm) => ({ ...vm, rules: vm.rules.filter((rule) => onHost(rule, host)) }));
  // Built with fromEntries: a VM named "__proto__" stays a key of its own.
  const elsewhere = Object.fromEntries(
    config.vms.flatMap((vm) => onHost(vm, host) ? [] : [[vm.name, vm.hosts ?? []] as const]),
  );
  const { hosts: _hosts, hostsLocation: _at, ...rest } = config;
  return { ...rest, vms, section: { host, elsewhere } };
}
