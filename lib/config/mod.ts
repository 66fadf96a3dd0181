/**
 * The config file: `passthrough_config.yaml` parsed and validated into a {@link Config}, every
 * problem reported at once with its `file:line:col`, path and hint.
 *
 * @module
 */

export {
  type Config,
  ConfigError,
  ConfigErrors,
  ConfigReadError,
  type ConfigReadProblem,
  type DeviceRule,
  type GuardPolicy,
  type HostConfig,
  type InterfaceSettings,
  loadConfig,
  type MatchCriteria,
  parseConfig,
  type VmConfig,
} from "./config.ts";
export {
  configForHost,
  type HostPick,
  type PickedHost,
  pickHostSection,
  UnknownHostError,
} from "./host_section.ts";
