package auth_test

import (
	"os"
	"strings"
	"testing"

	"github.com/musterhq/muster/internal/auth"
)

const protocolDoc = "../../docs/PROTOCOL.md"

// The permission table in docs/PROTOCOL.md is the Go table: a golden file
// check. MUSTER_UPDATE_DOC=1 rewrites the doc's generated part.
func TestProtocolDocTable(t *testing.T) {
	b, err := os.ReadFile(protocolDoc)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	i, j := strings.Index(doc, auth.DocBegin), strings.Index(doc, auth.DocEnd)
	if i < 0 || j < i {
		t.Fatalf("%s: no generated permission table (markers %q … %q)", protocolDoc, auth.DocBegin, auth.DocEnd)
	}
	want := auth.DocTable()
	got := doc[i+len(auth.DocBegin)+1 : j]
	if got == want {
		return
	}
	if os.Getenv("MUSTER_UPDATE_DOC") == "1" {
		doc = doc[:i+len(auth.DocBegin)+1] + want + doc[j:]
		if err := os.WriteFile(protocolDoc, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Fatalf("%s: the permission table differs from internal/auth's; run MUSTER_UPDATE_DOC=1 go test -run TestProtocolDocTable ./internal/auth\n--- doc\n%s\n--- table\n%s", protocolDoc, got, want)
}
