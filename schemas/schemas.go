// Package schemas holds the versioned JSON Schemas of every skein message type.
// The files are generated from the Go types in events/ (task schemas) and a test
// fails when the two drift apart. External systems can use them as published.
package schemas

import "embed"

// FS holds the schema files, named <type>.v<version>.json.
//
//go:embed *.json
var FS embed.FS

// BaseURL prefixes every schema's $id.
const BaseURL = "https://skein.dev/schemas/"
