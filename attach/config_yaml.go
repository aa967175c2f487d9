package attach

// The YAML layer of the config parser: decoding exactly one document, and
// giving yaml.v3's syntax errors the line (and column) they leave out.

import (
	"bytes"
	"errors"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// decode parses data as exactly one YAML document and returns its root node,
// or nil after recording why not.
func (p *parser) decode(data []byte) (root *yaml.Node) {
	defer func() {
		if r := recover(); r != nil { // yaml.v3 should not panic, but a config must not crash the manager
			root = nil
			p.errorf(nil, "", "cannot parse YAML: %v", r)
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			p.errorf(nil, "", "empty config: want host and services")
		} else {
			p.syntaxError(err, data)
		}
		return nil
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case err == nil:
		p.errorf(&extra, "", "want one YAML document, found another")
		return nil
	case !errors.Is(err, io.EOF):
		p.syntaxError(err, data)
		return nil
	}
	if len(doc.Content) == 0 || isNull(resolve(doc.Content[0])) {
		p.errorf(nil, "", "empty config: want host and services")
		return nil
	}
	return doc.Content[0]
}

// syntaxError records a YAML syntax error, finding its line where yaml.v3
// leaves it out.
func (p *parser) syntaxError(err error, data []byte) {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	var line, col int
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if num, text, ok := strings.Cut(rest, ": "); ok {
			if n, err := strconv.Atoi(num); err == nil {
				line, msg = n, text
				if parserProblems[msg] {
					line++ // yaml.v3 reports parser (not scanner) errors with 0-based lines
				}
				if msg == "did not find expected key" || msg == "did not find expected '-' indicator" {
					// yaml.v3 names the line where the block mapping or
					// list starts; the misplaced line is further down.
					line = problemLine(data, line, msg)
				}
			}
		}
	}
	if line == 0 {
		switch {
		case strings.HasPrefix(msg, "unknown anchor '"):
			name := strings.TrimSuffix(strings.TrimPrefix(msg, "unknown anchor '"), "' referenced")
			line, col = findAlias(data, name)
		case strings.Contains(msg, "control characters") || strings.Contains(msg, "UTF-8") ||
			strings.Contains(msg, "Unicode"):
			line, col = findBadChar(data)
		}
	}
	if line == 0 {
		// yaml.v3 leaves out "line N" when N would be 1 (its marks are 0-based).
		line = 1
	}
	p.errs = append(p.errs, &ConfigError{File: p.file, Line: line, Column: col, Msg: "YAML syntax error: " + msg})
}

// parserProblems are the messages of yaml.v3's parser errors, whose "line N"
// is 0-based (its scanner errors' are 1-based).
var parserProblems = map[string]bool{
	"did not find expected <stream-start>":   true,
	"did not find expected <document start>": true,
	"did not find expected node content":     true,
	"did not find expected '-' indicator":    true,
	"did not find expected key":              true,
	"did not find expected ',' or ']'":       true,
	"did not find expected ',' or '}'":       true,
	"found duplicate %YAML directive":        true,
	"found incompatible YAML document":       true,
	"found duplicate %TAG directive":         true,
	"found undefined tag handle":             true,
}

// problemLine returns the first line, from line from on, at which data
// stops parsing with msg: the shortest prefix of data that fails with msg.
// Prefixes ending before a block-structure error parse, so a binary search
// finds it.
func problemLine(data []byte, from int, msg string) int {
	lines := bytes.SplitAfter(data, []byte("\n"))
	prefix := func(n int) []byte { // the first n lines
		end := 0
		for _, l := range lines[:n] {
			end += len(l)
		}
		return data[:end]
	}
	lo, hi := max(from, 1), len(lines)
	if lo > hi {
		return from
	}
	for lo < hi {
		mid := lo + (hi-lo)/2
		if failsWith(prefix(mid), msg) {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return hi
}

// failsWith reports whether data does not parse as YAML, for reason msg.
func failsWith(data []byte, msg string) bool {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if err == nil {
			continue
		}
		if errors.Is(err, io.EOF) {
			return false
		}
		text := strings.TrimPrefix(err.Error(), "yaml: ")
		if rest, ok := strings.CutPrefix(text, "line "); ok {
			_, text, _ = strings.Cut(rest, ": ")
		}
		return text == msg
	}
}

// findAlias returns the position of the first "*name" alias in data.
func findAlias(data []byte, name string) (line, col int) {
	needle := []byte("*" + name)
	for off := 0; ; {
		i := bytes.Index(data[off:], needle)
		if i < 0 {
			return 0, 0
		}
		at := off + i
		end := at + len(needle)
		if end == len(data) || bytes.IndexByte([]byte(" \t\r\n,]}"), data[end]) >= 0 {
			return position(data, at)
		}
		off = at + 1
	}
}

// findBadChar returns the position of the first character YAML forbids.
func findBadChar(data []byte) (line, col int) {
	for i := 0; i < len(data); {
		r, size := utf8.DecodeRune(data[i:])
		ok := r == '\t' || r == '\n' || r == '\r' || r >= 0x20 && r <= 0x7e || r == 0x85 ||
			r >= 0xa0 && r <= 0xd7ff || r >= 0xe000 && r <= 0xfffd || r >= 0x10000 && r <= 0x10ffff
		if r == utf8.RuneError && size <= 1 || !ok {
			return position(data, i)
		}
		i += size
	}
	return 0, 0
}

// position converts a byte offset into a 1-based line and column.
func position(data []byte, off int) (line, col int) {
	before := data[:off]
	line = bytes.Count(before, []byte("\n")) + 1
	col = utf8.RuneCount(before[bytes.LastIndexByte(before, '\n')+1:]) + 1
	return line, col
}

// resolve follows aliases to the node they name.
func resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n.Kind == yaml.AliasNode && n.Alias != nil && i < 16; i++ {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// describe names what n is for a "got ..." message.
func describe(n *yaml.Node) string {
	switch {
	case n.Kind == yaml.MappingNode:
		return "a mapping"
	case n.Kind == yaml.SequenceNode:
		return "a list"
	case isNull(n):
		return "nothing"
	case n.Kind == yaml.ScalarNode:
		v := n.Value
		if len(v) > 64 {
			v = v[:61] + "..."
		}
		return strconv.Quote(v)
	}
	return "an alias"
}
