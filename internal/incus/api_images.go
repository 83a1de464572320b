package incus

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
