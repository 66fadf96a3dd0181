/**
 * Domain XML: the one strict reader of a libvirt domain definition (typed `<hostdev>` fields
 * such as boot order, ROM and guest address, the metadata passthrough records), the edits that
 * add and remove hostdevs while keeping every other byte, and the lenient scanner for
 * definitions the strict reader refuses.
 *
 * @module
 */

export {
  type DeviceBootOrder,
  type DomainEdit,
  DomainEditError,
  type DomainHostdev,
  type DomainInterface,
  type DomainPinning,
  DomainXmlError,
  editDomainXml,
  type GuestPciAddress,
  heldAddresses,
  METADATA_NAMESPACE,
  type ParsedDomain,
  parseDomainXml,
  type PciController,
  type PciControllerSpec,
  sameBesidesHostdevs,
  samePciDevice,
} from "./domain_xml.ts";
export {
  type LenientHostdevPool,
  type LenientHostdevScan,
  type NetworkInterfacesScan,
  type PassedElement,
  scanHostdevPoolLeniently,
  scanHostdevsLeniently,
  scanNetworkInterfacesLeniently,
} from "./lenient.ts";
export { describeUsbSource, type UsbSource, usbSourceFrom } from "./usb_source.ts";
export { redactSecrets, secretValues } from "./secrets.ts";
export { type NetworkDevice, type UsedDevices } from "./device_uses.ts";
