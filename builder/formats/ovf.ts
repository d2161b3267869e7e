/**
 * An OVF 1.0 descriptor (DMTF DSP0243) for one virtual machine with one stream-optimized
 * disk, and the manifest that pins the package's files, as an OVA carries them. The VMware
 * extensions VMware and VirtualBox read are included: the guest OS type, and UEFI firmware
 * (ossify disks boot only through UEFI). CIM elements are in the schema's alphabetical order.
 */

export interface OvfSpec {
  /** The virtual machine's name (also its system identifier). */
  name: string;
  version: string;
  disk: { href: string; size: number; capacity: number };
  cpus?: number;
  memoryMiB?: number;
}

const esc = (s: string | number) =>
  String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;' })[c]!);

function item(fields: Record<string, string | number>): string {
  const lines = Object.keys(fields)
    .sort()
    .map((k) => `        <rasd:${k}>${esc(fields[k]!)}</rasd:${k}>`);
  return ['      <Item>', ...lines, '      </Item>'].join('\n');
}

export function ovfDescriptor(spec: OvfSpec): string {
  const cpus = spec.cpus ?? 2;
  const mem = spec.memoryMiB ?? 1024;
  return `<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:vmw="http://www.vmware.com/schema/ovf" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <References>
    <File ovf:href="${esc(spec.disk.href)}" ovf:id="file1" ovf:size="${spec.disk.size}"/>
  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
    <Disk ovf:capacity="${spec.disk.capacity}" ovf:capacityAllocationUnits="byte" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <NetworkSection>
    <Info>The logical networks used</Info>
    <Network ovf:name="nat">
      <Description>The network the virtual machine is attached to</Description>
    </Network>
  </NetworkSection>
  <VirtualSystem ovf:id="${esc(spec.name)}">
    <Info>An ossify image</Info>
    <Name>${esc(spec.name)}</Name>
    <ProductSection>
      <Info>The image and its release</Info>
      <Product>${esc(spec.name)}</Product>
      <Version>${esc(spec.version)}</Version>
    </ProductSection>
    <OperatingSystemSection ovf:id="101" vmw:osType="other5xLinux64Guest">
      <Info>The guest operating system</Info>
      <Description>Linux (64-bit)</Description>
    </OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>${esc(spec.name)}</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>vmx-14</vssd:VirtualSystemType>
      </System>
${item({ AllocationUnits: 'hertz * 10^6', Description: 'Number of virtual CPUs', ElementName: `${cpus} virtual CPU(s)`, InstanceID: 1, ResourceType: 3, VirtualQuantity: cpus })}
${item({ AllocationUnits: 'byte * 2^20', Description: 'Memory size', ElementName: `${mem} MB of memory`, InstanceID: 2, ResourceType: 4, VirtualQuantity: mem })}
${item({ Address: 0, Description: 'SCSI controller', ElementName: 'SCSI controller 0', InstanceID: 3, ResourceSubType: 'lsilogic', ResourceType: 6 })}
${item({ AddressOnParent: 0, ElementName: 'Hard disk 1', HostResource: 'ovf:/disk/vmdisk1', InstanceID: 4, Parent: 3, ResourceType: 17 })}
${item({ AddressOnParent: 0, AutomaticAllocation: 'true', Connection: 'nat', Description: 'E1000 ethernet adapter', ElementName: 'Network adapter 1', InstanceID: 5, ResourceSubType: 'E1000', ResourceType: 10 })}
      <vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="efi"/>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
`;
}

/** The `.mf` manifest: `SHA256(file)= hex` lines, in the package's order. */
export function ovfManifest(files: readonly { name: string; sha256: string }[]): string {
  return files.map((f) => `SHA256(${f.name})= ${f.sha256}\n`).join('');
}
