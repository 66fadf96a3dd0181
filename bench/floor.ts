/**
 * The floor `plan` is measured against (`bench/whole_process.ts`): the least any Deno program
 * that plans from libvirt and lspci must do. It dlopens `libvirt.so.0` (and libc, to free what
 * libvirt returns), opens the connection `plan` opens, and reads every domain's inactive XML,
 * while one `lspci -nnkD` over the same tree runs. It imports nothing, parses nothing and prints
 * only counts, so whatever `plan` costs beyond it is the project's own.
 *
 * Usage: deno run --allow-ffi --allow-run=lspci --allow-read bench/floor.ts SYSFS_ROOT URI
 *
 * @module
 */

const [root, uri] = Deno.args;
if (root === undefined || uri === undefined) {
  console.error("usage: floor.ts SYSFS_ROOT URI");
  Deno.exit(2);
}

const VIR_DOMAIN_XML_SECURE = 1;
const VIR_DOMAIN_XML_INACTIVE = 2;

// The same flags plan's discovery runs lspci with, started before libvirt is touched.
const lspci = new Deno.Command("lspci", {
  args: ["-O", `sysfs.path=${root}/bus/pci`, "-nnkD"],
  stdout: "piped",
  stderr: "piped",
}).output();

const lib = Deno.dlopen("libvirt.so.0", {
  virConnectOpen: { parameters: ["buffer"], result: "pointer" },
  virConnectClose: { parameters: ["pointer"], result: "i32" },
  virConnectListAllDomains: { parameters: ["pointer", "buffer", "u32"], result: "i32" },
  virDomainGetXMLDesc: { parameters: ["pointer", "u32"], result: "pointer" },
  virDomainFree: { parameters: ["pointer"], result: "i32" },
}).symbols;
const libc = Deno.dlopen("libc.so.6", { free: { parameters: ["pointer"], result: "void" } })
  .symbols;

const conn = lib.virConnectOpen(new TextEncoder().encode(`${uri}\0`));
if (conn === null) throw new Error(`Cannot open ${uri}`);
const list = new BigUint64Array(1);
const count = lib.virConnectListAllDomains(conn, list, 0);
if (count < 0) throw new Error("virConnectListAllDomains failed");
const array = Deno.UnsafePointer.create(list[0]!);
const domains = new Deno.UnsafePointerView(array!);
let bytes = 0;
for (let i = 0; i < count; i++) {
  const dom = Deno.UnsafePointer.create(domains.getBigUint64(i * 8));
  const xml = lib.virDomainGetXMLDesc(dom, VIR_DOMAIN_XML_INACTIVE | VIR_DOMAIN_XML_SECURE);
  if (xml === null) throw new Error("virDomainGetXMLDesc failed");
  bytes += Deno.UnsafePointerView.getCString(xml).length;
  libc.free(xml);
  lib.virDomainFree(dom);
}
libc.free(array);
lib.virConnectClose(conn);

const listed = await lspci;
if (!listed.success) throw new Error(new TextDecoder().decode(listed.stderr));
const functions = new TextDecoder().decode(listed.stdout).split("\n")
  .filter((line) => /^[0-9a-f]{4}:/.test(line)).length;
console.log(`${count} domains, ${bytes} bytes of XML, ${functions} functions`);
