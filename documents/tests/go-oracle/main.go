// The differential oracle for kiln's template renderer: renders templates the
// way Tinkerbell's workflow controller does (text/template, Sprig's hermetic
// text functions plus formatPartition, netmaskToPrefixLength, toYaml and
// fromYaml, missingkey=error), so that tests can compare kiln with Go.
//
// Built by documents/tests/go_differential.rs in GOPATH mode from Debian's
// packages (golang-go, golang-github-masterminds-sprig-dev,
// golang-k8s-sigs-yaml-dev); no network.
//
// Input on stdin: JSON lines, each {"template": "...", "data": {...}}.
// Output on stdout: one JSON line per input, {"ok": "output"} or
// {"err": "message"}. Many cases in one process keep the test fast.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"text/template"

	sprig "github.com/Masterminds/sprig"
	"sigs.k8s.io/yaml"
)

// Tinkerbell's output cap (tink/controller/internal/workflow/template_funcs.go).
const maxRenderBytes = 256 * 1024

type limitedWriter struct {
	buf   bytes.Buffer
	limit int
}

func (w *limitedWriter) Write(p []byte) (int, error) {
	if w.buf.Len()+len(p) > w.limit {
		return 0, fmt.Errorf("rendered template exceeds %d bytes", w.limit)
	}
	return w.buf.Write(p)
}

// The four functions Tinkerbell adds to Sprig, with the same signatures and
// behaviour as its template_funcs.go (written from reading it).
func formatPartition(dev string, partition int) string {
	if strings.HasPrefix(dev, "/dev/disk/") {
		return fmt.Sprintf("%v-part%v", dev, partition)
	}
	if len(dev) > 0 && dev[len(dev)-1] >= '0' && dev[len(dev)-1] <= '9' {
		return fmt.Sprintf("%vp%v", dev, partition)
	}
	return fmt.Sprintf("%v%v", dev, partition)
}

func netmaskToPrefixLength(netmask string) (string, error) {
	ip := net.ParseIP(netmask)
	if ip == nil {
		return "", fmt.Errorf("invalid netmask format: %s", netmask)
	}
	v4 := ip.To4()
	if v4 == nil {
		return "", fmt.Errorf("netmask must be IPv4: %s", netmask)
	}
	ones, _ := net.IPMask(v4).Size()
	return strconv.Itoa(ones), nil
}

func toYaml(v interface{}) (string, error) {
	data, err := yaml.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("toYaml: %w", err)
	}
	return strings.TrimSuffix(string(data), "\n"), nil
}

func fromYaml(str string) (interface{}, error) {
	if str == "" {
		return nil, fmt.Errorf("fromYaml: empty YAML input")
	}
	var out interface{}
	if err := yaml.Unmarshal([]byte(str), &out); err != nil {
		return nil, fmt.Errorf("fromYaml: %w", err)
	}
	return out, nil
}

func funcMap() template.FuncMap {
	fm := sprig.HermeticTxtFuncMap()
	fm["formatPartition"] = formatPartition
	fm["netmaskToPrefixLength"] = netmaskToPrefixLength
	fm["toYaml"] = toYaml
	fm["fromYaml"] = fromYaml
	return fm
}

// typed turns JSON numbers into what typed Go fields hold: integers as int
// when they are written without a fraction or an exponent (Go's usual
// integer type, what number constants in a template are), everything else
// as float64.
func typed(v interface{}) interface{} {
	switch x := v.(type) {
	case json.Number:
		if i, err := strconv.ParseInt(string(x), 10, 0); err == nil {
			return int(i)
		}
		f, _ := x.Float64()
		return f
	case map[string]interface{}:
		for k, e := range x {
			x[k] = typed(e)
		}
		return x
	case []interface{}:
		for i, e := range x {
			x[i] = typed(e)
		}
		return x
	}
	return v
}

func render(text string, data interface{}) (out string, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	t, err := template.New("t").Option("missingkey=error").Funcs(funcMap()).Parse(text)
	if err != nil {
		return "", err
	}
	w := &limitedWriter{limit: maxRenderBytes}
	if err := t.Execute(w, data); err != nil {
		return "", err
	}
	return w.buf.String(), nil
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 16<<20)
	out := json.NewEncoder(os.Stdout)
	for in.Scan() {
		var req struct {
			Template string          `json:"template"`
			Data     json.RawMessage `json:"data"`
			// Instead of data: a Tinkerbell Hardware object and a
			// workflow's hardwareMap, made into data as Tinkerbell does.
			Tinkerbell *struct {
				Hardware    json.RawMessage   `json:"hardware"`
				HardwareMap map[string]string `json:"hardwareMap"`
			} `json:"tinkerbell"`
		}
		if err := json.Unmarshal(in.Bytes(), &req); err != nil {
			fmt.Fprintln(os.Stderr, "bad request:", err)
			os.Exit(2)
		}
		if req.Tinkerbell != nil {
			data, err := tinkerbellData(req.Tinkerbell.Hardware, req.Tinkerbell.HardwareMap)
			if err != nil {
				fmt.Fprintln(os.Stderr, "bad hardware:", err)
				os.Exit(2)
			}
			s, err := render(req.Template, data)
			if err != nil {
				out.Encode(map[string]string{"err": err.Error()})
			} else {
				out.Encode(map[string]string{"ok": s})
			}
			continue
		}
		dec := json.NewDecoder(bytes.NewReader(req.Data))
		dec.UseNumber()
		var data interface{}
		if err := dec.Decode(&data); err != nil {
			fmt.Fprintln(os.Stderr, "bad data:", err)
			os.Exit(2)
		}
		s, err := render(req.Template, typed(data))
		if err != nil {
			out.Encode(map[string]string{"err": err.Error()})
		} else {
			out.Encode(map[string]string{"ok": s})
		}
	}
}
