#!/usr/bin/env python3
"""Writes extra chat-template cases (tools, tool calls, tool results) rendered by Python's jinja2 with
Hugging Face's settings, for tests/test_template.c: tests/data/NAME.tools.cases.json for every template in
../shared/chat-templates. Run from the project root; needs python3-jinja2 (only to regenerate)."""
import glob, json, os, sys
from datetime import datetime
import jinja2, jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)

def env():
    e = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    e.filters["tojson"] = tojson
    e.globals["raise_exception"] = raise_exception
    e.globals["strftime_now"] = lambda fmt: datetime(2025, 1, 15).strftime(fmt)
    return e

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "description": "City name, e.g. Paris"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "default": "celsius"},
        "days": {"type": "integer", "description": "Forecast days", "minimum": 1, "maximum": 7},
        "tags": {"type": "array", "items": {"type": "string"}},
        "extra": {"type": ["string", "null"]},
        "opts": {"type": "object", "properties": {"x": {"type": "number"}}, "required": ["x"]}},
        "required": ["city"]}}}
CALC = {"type": "function", "function": {"name": "calc", "description": "Evaluate an expression",
        "parameters": {"type": "object", "properties": {"expr": {"type": "string"}}, "required": ["expr"]}}}
CALL = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Zürich", "days": 2}}}

def cases():
    base = [{"role": "user", "content": "Weather in Zürich?"}]
    call = {"role": "assistant", "content": "", "tool_calls": [CALL]}
    tool = {"role": "tool", "name": "get_weather", "content": "{\"temp\": 21.5}"}
    yield {"messages": base, "tools": [WEATHER, CALC], "add_generation_prompt": True}
    yield {"messages": [{"role": "system", "content": "Be brief."}] + base, "tools": [WEATHER],
           "add_generation_prompt": True}
    yield {"messages": base + [call, tool], "tools": [WEATHER], "add_generation_prompt": True}
    yield {"messages": base + [call, tool, {"role": "assistant", "content": "21.5 degrees."}],
           "add_generation_prompt": False}
    yield {"messages": [{"role": "user", "content": "  spaced  \n"}, {"role": "assistant", "content": "<think>x</think>ok"},
                        {"role": "user", "content": "again"}], "add_generation_prompt": True}

def main():
    e = env()
    for path in sorted(glob.glob("../shared/chat-templates/*.jinja")):
        name = os.path.basename(path)[:-6]
        tmpl = e.from_string(open(path).read())
        out = []
        for c in cases():
            c = dict(c, bos_token="<s>", eos_token="</s>")
            try:
                c["expected"] = tmpl.render(**c)
            except Exception as ex:
                c["error"] = f"{type(ex).__name__}: {ex}"
            out.append(c)
        with open(f"tests/data/{name}.tools.cases.json", "w") as f:
            json.dump(out, f, ensure_ascii=False, indent=1)
            f.write("\n")

if __name__ == "__main__":
    sys.exit(main())
