// argo-lua runs an Argo CD resource customization (health.lua, discovery.lua
// or action.lua) the way Argo CD runs it, so the scripts shipped under
// manifests/argocd/ are tested by the interpreter that will run them.
//
// What it mirrors, from argoproj/argo-cd util/lua/lua.go (VM.runLua) and
// util/lua/oslib_safe.go:
//   - gopher-lua (Lua 5.1), the interpreter Argo CD embeds;
//   - only the package, base and table libraries, plus an "os" table with
//     only time and date: custom scripts get no string, math or io library;
//   - a 1 s deadline;
//   - the resource as the global "obj", and the script's return value, which
//     must be a table, read back as JSON (an empty table reads as []);
//   - for an action, an empty object of the input that came back as []
//     (Lua has one kind of table) is an empty object again (cleanReturnedObj);
//   - for health, a status outside Healthy, Progressing, Degraded,
//     Suspended, Missing and Unknown reads as Unknown.
//
// Usage: argo-lua health|discovery|action SCRIPT < object.json > result.json
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	lua "github.com/yuin/gopher-lua"
)

func main() {
	if len(os.Args) != 3 {
		fail("usage: argo-lua health|discovery|action SCRIPT < object.json")
	}
	mode, scriptPath := os.Args[1], os.Args[2]
	script, err := os.ReadFile(scriptPath)
	if err != nil {
		fail(err.Error())
	}
	input, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail(err.Error())
	}
	var obj any
	if err := json.Unmarshal(input, &obj); err != nil {
		fail("the object is not JSON: " + err.Error())
	}
	result, err := run(string(script), obj)
	if err != nil {
		fail(err.Error())
	}
	switch mode {
	case "health":
		result = checkHealth(result)
	case "action":
		result = keepEmptyObjects(result, obj)
	case "discovery":
	default:
		fail("unknown mode " + mode)
	}
	out, err := json.Marshal(result)
	if err != nil {
		fail(err.Error())
	}
	fmt.Println(string(out))
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "argo-lua:", msg)
	os.Exit(1)
}

func run(script string, obj any) (any, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
		{lua.OsLibName, lua.OpenOs},
	} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.open), Protect: true}, lua.LString(lib.name)); err != nil {
			return nil, err
		}
	}
	// Keep os.time and os.date only, as Argo CD's safe os library does.
	full := l.GetGlobal(lua.OsLibName).(*lua.LTable)
	safe := l.NewTable()
	safe.RawSetString("time", full.RawGetString("time"))
	safe.RawSetString("date", full.RawGetString("date"))
	l.SetGlobal(lua.OsLibName, safe)
	l.PreloadModule(lua.OsLibName, func(l *lua.LState) int { l.Push(safe); return 1 })

	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", toLua(l, obj))
	if err := l.DoString(script); err != nil {
		return nil, err
	}
	ret := l.Get(-1)
	table, ok := ret.(*lua.LTable)
	if !ok {
		return nil, fmt.Errorf("expect table output from Lua script, not %s", ret.Type())
	}
	return fromLua(table), nil
}

func checkHealth(result any) any {
	health, ok := result.(map[string]any)
	if ok {
		switch health["status"] {
		case "Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown":
			return health
		}
	}
	return map[string]any{"status": "Unknown", "message": "Lua returned an invalid health status"}
}

func toLua(l *lua.LState, value any) lua.LValue {
	switch v := value.(type) {
	case bool:
		return lua.LBool(v)
	case float64:
		return lua.LNumber(v)
	case string:
		return lua.LString(v)
	case []any:
		t := l.CreateTable(len(v), 0)
		for _, item := range v {
			t.Append(toLua(l, item))
		}
		return t
	case map[string]any:
		t := l.CreateTable(0, len(v))
		for key, item := range v {
			t.RawSetH(lua.LString(key), toLua(l, item))
		}
		return t
	}
	return lua.LNil
}

// fromLua reads a value back the way layeh.com/gopher-json encodes it: a
// table with a positive length is an array, an empty table is [], any other
// table is an object with string keys.
func fromLua(value lua.LValue) any {
	switch v := value.(type) {
	case lua.LBool:
		return bool(v)
	case lua.LNumber:
		return float64(v)
	case lua.LString:
		return string(v)
	case *lua.LTable:
		if n := v.MaxN(); n > 0 {
			items := make([]any, 0, n)
			for i := 1; i <= n; i++ {
				items = append(items, fromLua(v.RawGetInt(i)))
			}
			return items
		}
		fields := map[string]any{}
		v.ForEach(func(key, item lua.LValue) {
			if s, ok := key.(lua.LString); ok {
				fields[string(s)] = fromLua(item)
			}
		})
		if len(fields) == 0 {
			return []any{}
		}
		return fields
	}
	return nil
}

// keepEmptyObjects undoes what the round trip through Lua does to an empty
// object ({} comes back as []), comparing with the object before the script.
func keepEmptyObjects(after, before any) any {
	switch a := after.(type) {
	case map[string]any:
		b, ok := before.(map[string]any)
		if !ok {
			return a
		}
		for key, value := range a {
			if old, found := b[key]; found {
				a[key] = keepEmptyObjects(value, old)
			}
		}
		return a
	case []any:
		switch b := before.(type) {
		case map[string]any:
			if len(a) == 0 {
				return b
			}
		case []any:
			for i := range a {
				if i < len(b) {
					a[i] = keepEmptyObjects(a[i], b[i])
				}
			}
		}
		return a
	}
	return after
}
