// argo-notify evaluates an Argo CD notification trigger's "when" and
// "oncePer" expressions, and renders a template's text, the way the
// notifications controller does, so the triggers shipped in
// manifests/argocd/argocd-notifications-cm.yaml are tested by the engines
// that will run them.
//
// What it mirrors, from argoproj/notifications-engine pkg/triggers/service.go:
//   - a condition is compiled with expr.Compile(when) (no environment: any
//     variable name compiles) and run with expr.Run(program, vars), where
//     vars["app"] is the Application as unstructured JSON; a result that is
//     not the boolean true, or an error, does not fire;
//   - oncePer is run the same way when the condition fired, and its value
//     printed with fmt's %v.
// Both expression engines Argo CD has shipped are run: antonmedv/expr v1.8.9
// (Argo CD 2.3, the first with notifications built in) and expr-lang/expr
// v1.17 (Argo CD 3.x); an expression must mean the same in both.
// Templates are Go text/template over the same vars (Argo CD adds sprig and
// its own functions; the shipped templates use only the built-in ones).
//
// Usage:
//   argo-notify when WHEN [ONCEPER] < app.json   -> {"old": {...}, "new": {...}}
//   argo-notify template TEXT < app.json         -> the rendered text
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"text/template"

	oldexpr "github.com/antonmedv/expr"
	newexpr "github.com/expr-lang/expr"
)

type result struct {
	Fired   bool   `json:"fired"`
	OncePer string `json:"oncePer,omitempty"`
	Error   string `json:"error,omitempty"`
}

func main() {
	if len(os.Args) < 3 {
		fail("usage: argo-notify when WHEN [ONCEPER] | template TEXT < app.json")
	}
	input, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail(err.Error())
	}
	var app map[string]any
	if err := json.Unmarshal(input, &app); err != nil {
		fail("the Application is not a JSON object: " + err.Error())
	}
	vars := map[string]any{"app": app}
	switch os.Args[1] {
	case "when":
		oncePer := ""
		if len(os.Args) > 3 {
			oncePer = os.Args[3]
		}
		out := map[string]result{
			"old": evaluate(oldRun, os.Args[2], oncePer, vars),
			"new": evaluate(newRun, os.Args[2], oncePer, vars),
		}
		printJSON(out)
	case "template":
		tmpl, err := template.New("message").Parse(os.Args[2])
		if err != nil {
			fail(err.Error())
		}
		var buf bytes.Buffer
		if err := tmpl.Execute(&buf, vars); err != nil {
			fail(err.Error())
		}
		fmt.Print(buf.String())
	default:
		fail("unknown mode " + os.Args[1])
	}
}

type runner func(code string, vars map[string]any) (any, error)

func oldRun(code string, vars map[string]any) (any, error) {
	program, err := oldexpr.Compile(code)
	if err != nil {
		return nil, fmt.Errorf("compile: %w", err)
	}
	return oldexpr.Run(program, vars)
}

func newRun(code string, vars map[string]any) (any, error) {
	program, err := newexpr.Compile(code)
	if err != nil {
		return nil, fmt.Errorf("compile: %w", err)
	}
	return newexpr.Run(program, vars)
}

func evaluate(run runner, when, oncePer string, vars map[string]any) result {
	if when == "" {
		when = "false"
	}
	value, err := run(when, vars)
	if err != nil {
		return result{Error: err.Error()}
	}
	fired, ok := value.(bool)
	res := result{Fired: ok && fired}
	if res.Fired && oncePer != "" {
		key, err := run(oncePer, vars)
		if err != nil {
			res.Error = "oncePer: " + err.Error()
		} else {
			res.OncePer = fmt.Sprintf("%v", key)
		}
	}
	return res
}

func printJSON(value any) {
	out, err := json.Marshal(value)
	if err != nil {
		fail(err.Error())
	}
	fmt.Println(string(out))
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "argo-notify:", msg)
	os.Exit(1)
}
