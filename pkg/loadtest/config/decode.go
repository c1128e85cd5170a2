package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"

	yaml "go.yaml.in/yaml/v3"

	"github.com/capstanhq/capstan/pkg/errs"
)

// envRef matches ${env:NAME} and ${env:NAME:-default}.
var envRef = regexp.MustCompile(`\$\{env:([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}`)

// ExpandEnv replaces ${env:NAME} with the value of NAME from lookup, and
// ${env:NAME:-default} with default when NAME is unset. An unset variable
// without a default is an error naming its line.
func ExpandEnv(data []byte, lookup func(string) (string, bool)) ([]byte, error) {
	var firstErr error
	lines := bytes.Split(data, []byte("\n"))
	for i, line := range lines {
		if !bytes.Contains(line, []byte("${env:")) {
			continue
		}
		lines[i] = envRef.ReplaceAllFunc(line, func(m []byte) []byte {
			sub := envRef.FindSubmatch(m)
			name := string(sub[1])
			if v, ok := lookup(name); ok {
				return []byte(v)
			}
			if bytes.Contains(m, []byte(":-")) {
				return sub[2]
			}
			if firstErr == nil {
				firstErr = errs.Invalid("line "+strconv.Itoa(i+1), "environment variable %s is not set", name)
			}
			return m
		})
	}
	if firstErr != nil {
		return nil, firstErr
	}
	return bytes.Join(lines, []byte("\n")), nil
}

// Load reads, expands (from the process environment), decodes and
// validates the config file at path.
func Load(path string) (*Spec, error) {
	spec, _, err := LoadLines(path)
	return spec, err
}

// LoadLines is Load that also returns the lines of the file's fields, for
// reporting errors found later (engine.Options.Lines).
func LoadLines(path string) (*Spec, Lines, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, errs.Wrap(errs.InvalidArgument, err, "reading config")
	}
	spec, lines, err := DecodeLines(data, os.LookupEnv)
	if err != nil {
		return nil, nil, errs.WithField(err, filepath.Base(path))
	}
	return spec, lines, nil
}

// Decode expands environment references in data (with lookup; nil looks
// nothing up), decodes it strictly as YAML (JSON is YAML too) and validates
// the result. Every error names the field path and, when the field is in
// the text, its line.
func Decode(data []byte, lookup func(string) (string, bool)) (*Spec, error) {
	spec, _, err := DecodeLines(data, lookup)
	return spec, err
}

// DecodeLines is Decode that also returns the lines of the fields, so that
// errors found later, when the spec's guns and ammo are built
// (engine.Options.Lines), can name their line too.
func DecodeLines(data []byte, lookup func(string) (string, bool)) (*Spec, Lines, error) {
	if lookup == nil {
		lookup = func(string) (string, bool) { return "", false }
	}
	data, err := ExpandEnv(data, lookup)
	if err != nil {
		return nil, nil, err
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, nil, errs.New(errs.InvalidArgument, "%s", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return nil, nil, errs.New(errs.InvalidArgument, "empty config")
	}
	d := &decoder{lines: Lines{}}
	spec := &Spec{}
	if err := d.decode(doc.Content[0], reflect.ValueOf(spec).Elem(), ""); err != nil {
		return nil, nil, err
	}
	if err := spec.Validate(); err != nil {
		return nil, nil, d.lines.Locate(err)
	}
	return spec, d.lines, nil
}

// Lines maps the field paths of a decoded config ("pools[0].gun.tls") to
// their lines in its text. They are kept apart from the Spec, which is the
// same whatever text it was decoded from.
type Lines map[string]int

// Locate returns err with the line of its field, or of the field's nearest
// ancestor in the text, before its message ("line 12: …"), as Decode
// reports its own errors. The field is err's *errs.Error field, a path of
// the spec ("pools[0].gun.descriptorSet") as engine.New reports them. An
// error without a field, or whose field is not in the text, is returned
// as it is; so is every error of nil Lines.
func (l Lines) Locate(err error) error {
	var e *errs.Error
	if len(l) == 0 || !errorsAs(err, &e) || e.Field == "" {
		return err
	}
	path := e.Field
	for {
		if line, ok := l[path]; ok {
			c := *e
			if c.Message == "" {
				c.Message = "line " + strconv.Itoa(line)
			} else {
				c.Message = "line " + strconv.Itoa(line) + ": " + c.Message
			}
			return &c
		}
		i := strings.LastIndexAny(path, ".[")
		if i <= 0 {
			return err
		}
		path = path[:i]
	}
}

type decoder struct {
	lines Lines // field path → line
	depth int
	nodes int
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

func (d *decoder) fail(n *yaml.Node, path, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if path == "" {
		return errs.New(errs.InvalidArgument, "line %d: %s", n.Line, msg)
	}
	return errs.Invalid(path, "line %d: %s", n.Line, msg)
}

// keyLine records the line of a mapping key as its field's line, so that
// a field whose value is a block ("gun:" followed by its keys) is placed
// at its key rather than at the first line of its value.
func (d *decoder) keyLine(k *yaml.Node, path string) {
	if _, seen := d.lines[path]; !seen {
		d.lines[path] = k.Line
	}
}

var (
	jsonUnmarshaler = reflect.TypeOf((*json.Unmarshaler)(nil)).Elem()
	rawMessage      = reflect.TypeOf(json.RawMessage(nil))
)

// decode fills v from n, checking keys against v's JSON field names.
func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string) error {
	d.depth++
	d.nodes++
	defer func() { d.depth-- }()
	if d.depth > 64 || d.nodes > maxNodes {
		return d.fail(n, path, "config too large or nested too deeply")
	}
	for n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if path != "" {
		if _, seen := d.lines[path]; !seen {
			d.lines[path] = n.Line
		}
	}
	t := v.Type()
	if t == rawMessage || reflect.PointerTo(t).Implements(jsonUnmarshaler) || t.Kind() == reflect.Interface {
		return d.viaJSON(n, v, path)
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		v.Set(reflect.Zero(t))
		return nil
	}
	switch t.Kind() {
	case reflect.Pointer:
		p := reflect.New(t.Elem())
		if err := d.decode(n, p.Elem(), path); err != nil {
			return err
		}
		v.Set(p)
		return nil
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return d.fail(n, path, "want a mapping, got %s", kindName(n))
		}
		fields := jsonFields(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			if k.Kind != yaml.ScalarNode {
				return d.fail(k, path, "keys must be strings")
			}
			idx, ok := fields[k.Value]
			if !ok {
				return d.fail(k, join(path, k.Value), "unknown field %q%s", k.Value, suggest(k.Value, fields))
			}
			d.keyLine(k, join(path, k.Value))
			if err := d.decode(val, v.Field(idx), join(path, k.Value)); err != nil {
				return err
			}
		}
		return nil
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return d.fail(n, path, "want a list, got %s", kindName(n))
		}
		s := reflect.MakeSlice(t, len(n.Content), len(n.Content))
		for i, el := range n.Content {
			if err := d.decode(el, s.Index(i), path+"["+strconv.Itoa(i)+"]"); err != nil {
				return err
			}
		}
		v.Set(s)
		return nil
	case reflect.Map:
		if n.Kind != yaml.MappingNode || t.Key().Kind() != reflect.String {
			return d.fail(n, path, "want a mapping, got %s", kindName(n))
		}
		m := reflect.MakeMapWithSize(t, len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			if k.Kind != yaml.ScalarNode {
				return d.fail(k, path, "keys must be strings")
			}
			e := reflect.New(t.Elem()).Elem()
			d.keyLine(k, join(path, k.Value))
			if err := d.decode(val, e, join(path, k.Value)); err != nil {
				return err
			}
			m.SetMapIndex(reflect.ValueOf(k.Value).Convert(t.Key()), e)
		}
		v.Set(m)
		return nil
	}
	if n.Kind != yaml.ScalarNode {
		return d.fail(n, path, "want a %s, got %s", kindOf(t), kindName(n))
	}
	return d.viaJSON(n, v, path)
}

// viaJSON decodes n into v with encoding/json, so JSON unmarshalers and
// type checks apply.
func (d *decoder) viaJSON(n *yaml.Node, v reflect.Value, path string) error {
	var buf bytes.Buffer
	if err := d.nodeJSON(&buf, n, 0); err != nil {
		return d.fail(n, path, "%v", err)
	}
	if err := json.Unmarshal(buf.Bytes(), v.Addr().Interface()); err != nil {
		msg := err.Error()
		var te *json.UnmarshalTypeError
		if errorsAs(err, &te) {
			msg = fmt.Sprintf("want a %s, got %s", kindOf(te.Type), te.Value)
		}
		var e *errs.Error
		if errorsAs(err, &e) {
			msg = e.Message
		}
		return d.fail(n, path, "%s", msg)
	}
	return nil
}

// maxNodes bounds the work of one decode, against alias bombs.
const maxNodes = 1 << 20

// nodeJSON writes n as JSON, keeping the order of mapping keys.
func (d *decoder) nodeJSON(b *bytes.Buffer, n *yaml.Node, depth int) error {
	d.nodes++
	if d.nodes > maxNodes || depth > 64 {
		return fmt.Errorf("config too large or nested too deeply")
	}
	for n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	switch n.Kind {
	case yaml.MappingNode:
		b.WriteByte('{')
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			for k.Kind == yaml.AliasNode {
				k = k.Alias
			}
			if k.Kind != yaml.ScalarNode {
				return fmt.Errorf("keys must be strings")
			}
			if i > 0 {
				b.WriteByte(',')
			}
			kb, _ := json.Marshal(k.Value)
			b.Write(kb)
			b.WriteByte(':')
			if err := d.nodeJSON(b, n.Content[i+1], depth+1); err != nil {
				return err
			}
		}
		b.WriteByte('}')
	case yaml.SequenceNode:
		b.WriteByte('[')
		for i, el := range n.Content {
			if i > 0 {
				b.WriteByte(',')
			}
			if err := d.nodeJSON(b, el, depth+1); err != nil {
				return err
			}
		}
		b.WriteByte(']')
	case yaml.ScalarNode:
		var x any
		if err := n.Decode(&x); err != nil {
			return err
		}
		if f, ok := x.(float64); ok && (f != f || f > 1e308 || f < -1e308) {
			return fmt.Errorf("number %s is out of range", n.Value)
		}
		if _, ok := x.(string); !ok && x != nil {
			switch x.(type) {
			case bool, int, int64, uint64, float64:
			default:
				x = n.Value // timestamps and other tagged scalars stay text
			}
		}
		xb, err := json.Marshal(x)
		if err != nil {
			return err
		}
		b.Write(xb)
	default:
		b.WriteString("null")
	}
	return nil
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return fmt.Sprintf("%q", n.Value)
	}
	return "nothing"
}

func kindOf(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "whole number"
	case reflect.Float32, reflect.Float64:
		return "number"
	case reflect.Slice:
		return "list"
	case reflect.Map, reflect.Struct:
		return "mapping"
	}
	return t.String()
}

// jsonFields maps JSON names to field indexes of t.
func jsonFields(t reflect.Type) map[string]int {
	m := map[string]int{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		m[name] = i
	}
	return m
}

// suggest returns " (did you mean "x"?)" for a near miss.
func suggest(key string, fields map[string]int) string {
	var names []string
	for n := range fields {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if strings.EqualFold(n, key) || editDistance(n, key) <= 2 {
			return fmt.Sprintf(" (did you mean %q?)", n)
		}
	}
	return ""
}

func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 99
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			c := prev[j-1]
			if a[i-1] != b[j-1] {
				c++
			}
			cur[j] = min(c, prev[j]+1, cur[j-1]+1)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func errorsAs(err error, target any) bool { return errors.As(err, target) }
