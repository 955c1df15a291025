//go:build tools

// Package tools pins the skaffold command, so that `go mod tidy` keeps its requirement.
package tools

import _ "github.com/GoogleContainerTools/skaffold/v2/cmd/skaffold"
