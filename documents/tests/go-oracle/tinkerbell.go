// Tinkerbell's template data, built as its workflow controller builds it
// (tink/controller/internal/workflow/reconciler.go in tinkerbell/tinkerbell):
// the workflow's hardwareMap at the top, "hardware" the Hardware object as
// JSON (structToMap), "Hardware" the legacy Go struct view
// (templateHardwareData), "references" the referenced objects (none here).
//
// The types mirror api/v1alpha1/tinkerbell/hardware.go (written from reading
// it: the fields templates can reach, with their JSON names and omitempty),
// so that `.Hardware` has Go struct semantics: every field present, zero when
// unset, nil pointers. kiln builds the same views from a table
// (documents/src/tinkerbell/schema.rs); this is the independent check.
package main

import (
	"encoding/json"
)

type ObjectMeta struct {
	Name        string            `json:"name,omitempty"`
	Namespace   string            `json:"namespace,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

type Hardware struct {
	APIVersion string         `json:"apiVersion,omitempty"`
	Kind       string         `json:"kind,omitempty"`
	ObjectMeta ObjectMeta     `json:"metadata,omitempty"`
	Spec       HardwareSpec   `json:"spec,omitempty"`
	Status     HardwareStatus `json:"status,omitempty"`
}

type HardwareStatus struct {
	State string `json:"state,omitempty"`
}

type TypedLocalObjectReference struct {
	APIGroup *string `json:"apiGroup"`
	Kind     string  `json:"kind"`
	Name     string  `json:"name"`
}

type HardwareSpec struct {
	AgentID     string                     `json:"agentID,omitempty"`
	Auto        AutoCapabilities           `json:"auto,omitempty"`
	BMCRef      *TypedLocalObjectReference `json:"bmcRef,omitempty"`
	Interfaces  []Interface                `json:"interfaces,omitempty"`
	References  map[string]Reference       `json:"references,omitempty"`
	Metadata    *HardwareMetadata          `json:"metadata,omitempty"`
	TinkVersion int64                      `json:"tinkVersion,omitempty"`
	Disks       []Disk                     `json:"disks,omitempty"`
	Resources   map[string]string          `json:"resources,omitempty"`
	UserData    *string                    `json:"userData,omitempty"`
	VendorData  *string                    `json:"vendorData,omitempty"`
}

type AutoCapabilities struct {
	EnrollmentEnabled bool `json:"enrollmentEnabled,omitempty"`
}

type Reference struct {
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name,omitempty"`
	Group     string `json:"group,omitempty"`
	Version   string `json:"version,omitempty"`
	Resource  string `json:"resource,omitempty"`
}

type Interface struct {
	Netboot     *Netboot `json:"netboot,omitempty"`
	Isoboot     *Isoboot `json:"isoboot,omitempty"`
	DHCP        *DHCP    `json:"dhcp,omitempty"`
	DisableDHCP bool     `json:"disableDhcp,omitempty"`
}

type Netboot struct {
	AllowPXE      *bool     `json:"allowPXE,omitempty"`
	AllowWorkflow *bool     `json:"allowWorkflow,omitempty"`
	IPXE          *IPXE     `json:"ipxe,omitempty"`
	OSIE          *OSIE     `json:"osie,omitempty"`
	PXELINUX      *PXELINUX `json:"pxelinux,omitempty"`
	RPI           *RPI      `json:"rpi,omitempty"`
}

type PXELINUX struct {
	Config string `json:"config,omitempty"`
}

type RPI struct {
	ConfigTxt    string `json:"configTxt,omitempty"`
	FirmwarePath string `json:"firmwarePath,omitempty"`
	SerialNum    string `json:"serialNum"`
}

type Isoboot struct {
	SourceISO string `json:"sourceISO,omitempty"`
}

type IPXE struct {
	URL      string `json:"url,omitempty"`
	Contents string `json:"contents,omitempty"`
	Binary   string `json:"binary,omitempty"`
}

type OSIE struct {
	BaseURL      string   `json:"baseURL,omitempty"`
	Kernel       string   `json:"kernel,omitempty"`
	Initrd       string   `json:"initrd,omitempty"`
	KernelParams []string `json:"kernelParams,omitempty"`
}

type DHCP struct {
	MAC                   string                 `json:"mac,omitempty"`
	Hostname              string                 `json:"hostname,omitempty"`
	DomainName            string                 `json:"domain_name,omitempty"`
	LeaseTime             int64                  `json:"lease_time,omitempty"`
	NameServers           []string               `json:"name_servers,omitempty"`
	TimeServers           []string               `json:"time_servers,omitempty"`
	Arch                  string                 `json:"arch,omitempty"`
	UEFI                  bool                   `json:"uefi,omitempty"`
	IfaceName             string                 `json:"iface_name,omitempty"`
	IP                    *IP                    `json:"ip,omitempty"`
	VLANID                string                 `json:"vlan_id,omitempty"`
	ClasslessStaticRoutes []ClasslessStaticRoute `json:"classless_static_routes,omitempty"`
	TFTPServerName        string                 `json:"tftp_server_name,omitempty"`
	BootFileName          string                 `json:"boot_file_name,omitempty"`
}

type IP struct {
	Address string `json:"address,omitempty"`
	Netmask string `json:"netmask,omitempty"`
	Gateway string `json:"gateway,omitempty"`
	Family  int64  `json:"family,omitempty"`
}

type ClasslessStaticRoute struct {
	DestinationDescriptor string `json:"destination_descriptor"`
	Router                string `json:"router"`
}

type HardwareMetadata struct {
	State        string                `json:"state,omitempty"`
	BondingMode  int64                 `json:"bonding_mode,omitempty"`
	Manufacturer *MetadataManufacturer `json:"manufacturer,omitempty"`
	Instance     *MetadataInstance     `json:"instance,omitempty"`
	Custom       *MetadataCustom       `json:"custom,omitempty"`
	Facility     *MetadataFacility     `json:"facility,omitempty"`
}

type MetadataManufacturer struct {
	ID   string `json:"id,omitempty"`
	Slug string `json:"slug,omitempty"`
}

type MetadataInstance struct {
	ID                  string                           `json:"id,omitempty"`
	State               string                           `json:"state,omitempty"`
	Hostname            string                           `json:"hostname,omitempty"`
	AllowPxe            bool                             `json:"allow_pxe,omitempty"`
	Rescue              bool                             `json:"rescue,omitempty"`
	OperatingSystem     *MetadataInstanceOperatingSystem `json:"operating_system,omitempty"`
	AlwaysPxe           bool                             `json:"always_pxe,omitempty"`
	IpxeScriptURL       string                           `json:"ipxe_script_url,omitempty"`
	Ips                 []*MetadataInstanceIP            `json:"ips,omitempty"`
	Userdata            string                           `json:"userdata,omitempty"`
	CryptedRootPassword string                           `json:"crypted_root_password,omitempty"`
	Tags                []string                         `json:"tags,omitempty"`
	Storage             *MetadataInstanceStorage         `json:"storage,omitempty"`
	SSHKeys             []string                         `json:"ssh_keys,omitempty"`
	NetworkReady        bool                             `json:"network_ready,omitempty"`
}

type MetadataInstanceOperatingSystem struct {
	Slug     string `json:"slug,omitempty"`
	Distro   string `json:"distro,omitempty"`
	Version  string `json:"version,omitempty"`
	ImageTag string `json:"image_tag,omitempty"`
	OsSlug   string `json:"os_slug,omitempty"`
}

type MetadataInstanceIP struct {
	Address    string `json:"address,omitempty"`
	Netmask    string `json:"netmask,omitempty"`
	Gateway    string `json:"gateway,omitempty"`
	Family     int64  `json:"family,omitempty"`
	Public     bool   `json:"public,omitempty"`
	Management bool   `json:"management,omitempty"`
}

type MetadataInstanceStorage struct {
	Disks       []*MetadataInstanceStorageDisk       `json:"disks,omitempty"`
	Raid        []*MetadataInstanceStorageRAID       `json:"raid,omitempty"`
	Filesystems []*MetadataInstanceStorageFilesystem `json:"filesystems,omitempty"`
}

type MetadataInstanceStorageDisk struct {
	Device     string                                  `json:"device,omitempty"`
	WipeTable  bool                                    `json:"wipe_table,omitempty"`
	Partitions []*MetadataInstanceStorageDiskPartition `json:"partitions,omitempty"`
}

type MetadataInstanceStorageDiskPartition struct {
	Label    string `json:"label,omitempty"`
	Number   int64  `json:"number,omitempty"`
	Size     int64  `json:"size,omitempty"`
	Start    int64  `json:"start,omitempty"`
	TypeGUID string `json:"type_guid,omitempty"`
}

type MetadataInstanceStorageRAID struct {
	Name    string   `json:"name,omitempty"`
	Level   string   `json:"level,omitempty"`
	Devices []string `json:"devices,omitempty"`
	Spare   int64    `json:"spare,omitempty"`
}

type MetadataInstanceStorageFilesystem struct {
	Mount *MetadataInstanceStorageMount `json:"mount,omitempty"`
}

type MetadataInstanceStorageMount struct {
	Device string                                         `json:"device,omitempty"`
	Format string                                         `json:"format,omitempty"`
	Files  []*MetadataInstanceStorageFile                 `json:"files,omitempty"`
	Create *MetadataInstanceStorageMountFilesystemOptions `json:"create,omitempty"`
	Point  string                                         `json:"point,omitempty"`
}

type MetadataInstanceStorageFile struct {
	Path     string `json:"path,omitempty"`
	Contents string `json:"contents,omitempty"`
	Mode     int64  `json:"mode,omitempty"`
	UID      int64  `json:"uid,omitempty"`
	GID      int64  `json:"gid,omitempty"`
}

type MetadataInstanceStorageMountFilesystemOptions struct {
	Force   bool     `json:"force,omitempty"`
	Options []string `json:"options,omitempty"`
}

type MetadataCustom struct {
	PreinstalledOperatingSystemVersion *MetadataInstanceOperatingSystem `json:"preinstalled_operating_system_version,omitempty"`
	PrivateSubnets                     []string                         `json:"private_subnets,omitempty"`
}

type MetadataFacility struct {
	PlanSlug        string `json:"plan_slug,omitempty"`
	PlanVersionSlug string `json:"plan_version_slug,omitempty"`
	FacilityCode    string `json:"facility_code,omitempty"`
}

type Disk struct {
	Device string `json:"device,omitempty"`
}

type templateHardwareData struct {
	Disks      []string
	Interfaces []Interface
	UserData   string
	Metadata   HardwareMetadata
	VendorData string
}

// tinkerbellData builds the data of one render from a Hardware object (JSON)
// and a workflow's hardwareMap.
func tinkerbellData(hardwareJSON []byte, hardwareMap map[string]string) (map[string]interface{}, error) {
	var hw Hardware
	if err := json.Unmarshal(hardwareJSON, &hw); err != nil {
		return nil, err
	}
	data := make(map[string]interface{})
	for k, v := range hardwareMap {
		data[k] = v
	}
	var contract templateHardwareData
	for _, d := range hw.Spec.Disks {
		contract.Disks = append(contract.Disks, d.Device)
	}
	if len(hw.Spec.Interfaces) > 0 {
		contract.Interfaces = hw.Spec.Interfaces
	}
	if hw.Spec.UserData != nil {
		contract.UserData = *hw.Spec.UserData
	}
	if hw.Spec.Metadata != nil {
		contract.Metadata = *hw.Spec.Metadata
	}
	if hw.Spec.VendorData != nil {
		contract.VendorData = *hw.Spec.VendorData
	}
	b, err := json.Marshal(hw)
	if err != nil {
		return nil, err
	}
	var object map[string]interface{}
	if err := json.Unmarshal(b, &object); err != nil {
		return nil, err
	}
	data["hardware"] = object
	data["Hardware"] = contract
	data["references"] = map[string]interface{}{}
	return data, nil
}
