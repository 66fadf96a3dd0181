/**
 * PCI addresses: the canonical form (`0000:01:00.0`), its libvirt form, and their order.
 * (Device classes and the walk over a function's `config` space are discovery's own, in
 * `class.ts` and `config_space.ts`.)
 *
 * @module
 */

export * from "./address.ts";
