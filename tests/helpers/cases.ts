/**
 * The requests of `tests/fixtures/hosts/cases.json`: real hosts' IOMMU listings with the outcome
 * a correct tool reaches, shared by the in-process (`tests/plan/cases_test.ts`) and CLI
 * (`tests/cli/cases_test.ts`) runs.
 *
 * @module
 */

import { HOSTS } from "./hosts.ts";

/** A device request as `cases.json` writes it. */
export interface CaseMatch {
  vendor_id: string;
  device_id: string;
  bdf?: string;
}

/** One case: a request on a captured host and what must come of it. */
export interface Case {
  id: string;
  /** A file name in `tests/fixtures/hosts/` without `.json`. */
  host: string;
  vm: string;
  match: CaseMatch;
  other_requests?: { vm: string; match: CaseMatch }[];
  expect: {
    devices?: string[];
    no_warn?: boolean;
    warn?: string;
    error?: string;
    candidates?: string[];
    vms?: string[];
    group?: number;
  };
  why: string;
}

/**
 * Cases whose `why` leaves the warning open ("whether the tool warns is not checked"), with the
 * refusal this tool makes: the shared file stays a byte-identical copy. dl380-04: the iLO's
 * virtual USB controller (103c), the remote console's keyboard and media, shares the Matrox
 * VGA's (102b) slot, and another vendor's USB controller there is not the card asked for.
 */
const DECIDED: Readonly<Record<string, string>> = { "dl380-04": "group-contains-host-critical" };

/** Every case of `tests/fixtures/hosts/cases.json`, in file order. */
export function loadCases(): Case[] {
  const cases = JSON.parse(Deno.readTextFileSync(new URL("cases.json", HOSTS))) as Case[];
  return cases.map((c) =>
    c.id in DECIDED ? { ...c, expect: { ...c.expect, warn: DECIDED[c.id]! } } : c
  );
}
