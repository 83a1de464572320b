package incus

import "time"

// ImageAliasesEntryPut holds the writable fields of an image alias.
type ImageAliasesEntryPut struct {
	// Description is free text.
	Description string `json:"description"`
	// Target is the fingerprint of the image the alias points to.
	Target string `json:"target"`
}

// ImageAliasesEntry is GET /1.0/images/aliases/<name>.
type ImageAliasesEntry struct {
	// ImageAliasesEntryPut carries target and description inline, as on the wire.
	ImageAliasesEntryPut
	// Name is the alias name.
	Name string `json:"name"`
	// Type is "container" or "virtual-machine", the kind of image the alias points to.
	Type string `json:"type"`
}

// ImageAlias names an image (as listed in an image).
type ImageAlias struct {
	// Name is the alias.
	Name string `json:"name"`
	// Description is free text.
	Description string `json:"description"`
}

// Image is GET /1.0/images/<fingerprint>.
type Image struct {
	// Fingerprint is the image's SHA-256.
	Fingerprint string `json:"fingerprint"`
	// Properties are its properties (from metadata.yaml).
	Properties map[string]string `json:"properties"`
	// Aliases name it.
	Aliases []ImageAlias `json:"aliases"`
	// Size is the image file's size in bytes.
	Size int64 `json:"size"`
	// Architecture is e.g. x86_64.
	Architecture string `json:"architecture"`
	// UploadedAt is when it was imported.
	UploadedAt time.Time `json:"uploaded_at"`
}
