/* Chat templates (chat/template.h): the 11 real templates of ../shared/chat-templates against Python
 * jinja2's renderings (byte for byte, errors included), extra tool-calling cases (tests/data, made by
 * tools/gen_template_cases.py), Jinja semantics case by case, limits, and malformed templates. */
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/wait.h>

#include "chat/template.h"
#include "model/gguf.h"
#include "test.h"

static const char *const k_templates[] = {
    "CohereForAI-c4ai-command-r-plus-tool_use", "NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use",
    "NousResearch-Hermes-3-Llama-3.1-8B-tool_use", "Qwen-Qwen2.5-7B-Instruct",
    "deepseek-ai-DeepSeek-R1-Distill-Llama-8B", "llama-cpp-deepseek-r1", "meetkai-functionary-medium-v3.1",
    "meetkai-functionary-medium-v3.2", "meta-llama-Llama-3.1-8B-Instruct", "meta-llama-Llama-3.2-3B-Instruct",
    "meta-llama-Llama-3.3-70B-Instruct",
};
enum { N_TEMPLATES = sizeof k_templates / sizeof k_templates[0] };

static char *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)len + 1);
    *n = buf ? fread(buf, 1, (size_t)len, f) : 0;
    fclose(f);
    if (buf) buf[*n] = '\0';
    return buf;
}

static sd_tmpl *load_template(const char *name) {
    char rel[256];
    snprintf(rel, sizeof rel, "chat-templates/%s.jinja", name);
    const char *path = shared_path(rel);
    if (!path) return NULL;
    size_t n;
    char *src = read_all(path, &n);
    sd_err err = {{0}};
    sd_tmpl *t = src ? sd_tmpl_parse(src, n, &err) : NULL;
    if (!t) fprintf(stderr, "  %s: %s\n", name, err.msg);
    free(src);
    return t;
}

/* Length of the error class ("UndefinedError" of "UndefinedError: ..."). */
static size_t class_len(const char *msg) {
    const char *c = strchr(msg, ':');
    return c ? (size_t)(c - msg) : strlen(msg);
}

/* Renders every case of a cases file; counts the cases that match. exact_errors: the message must be
 * Jinja's word for word (else only its class). */
static int check_cases(const sd_tmpl *t, const char *path, bool exact_errors, int *n_cases) {
    json_error_t je;
    json_t *cases = json_load_file(path, 0, &je);
    *n_cases = 0;
    if (!cases) {
        fprintf(stderr, "  %s: %s\n", path, je.text);
        return -1;
    }
    int ok = 0;
    size_t i;
    json_t *c;
    json_array_foreach(cases, i, c) {
        (*n_cases)++;
        char *out = NULL;
        size_t n = 0;
        sd_err err = {{0}};
        int rc = sd_tmpl_render(t, c, &out, &n, &err);
        json_t *exp = json_object_get(c, "expected");
        const char *want_err = json_string_value(json_object_get(c, "error"));
        if (exp) {
            if (rc == 0 && n == json_string_length(exp) && !memcmp(out, json_string_value(exp), n)) ok++;
            else fprintf(stderr, "  %s case %zu: %s\n", path, i, rc ? err.msg : "rendering differs");
        } else if (want_err) {
            bool same = rc != 0 && (exact_errors ? !strcmp(err.msg, want_err)
                                                 : class_len(err.msg) == class_len(want_err) &&
                                                       !strncmp(err.msg, want_err, class_len(want_err)));
            if (same) ok++;
            else fprintf(stderr, "  %s case %zu: want error '%s', got %s\n", path, i, want_err, rc ? err.msg : "a rendering");
        }
        free(out);
    }
    json_decref(cases);
    return ok;
}

static void test_real_templates(void) {
    int total = 0;
    for (int k = 0; k < N_TEMPLATES; k++) {
        sd_tmpl *t = load_template(k_templates[k]);
        if (!t && !shared_path("chat-templates")) SKIP("../shared/chat-templates is not there");
        REQUIRE(t);
        char rel[256];
        snprintf(rel, sizeof rel, "chat-templates/%s.cases.json", k_templates[k]);
        int n, ok = check_cases(t, shared_path(rel), true, &n);
        CHECKF(ok == n && n >= 8, "%s: %d of %d cases match", k_templates[k], ok, n);
        total += ok;
        sd_tmpl_free(t);
    }
    CHECK_EQ_INT(total, 88);
}

static void test_tool_cases(void) {
    for (int k = 0; k < N_TEMPLATES; k++) {
        sd_tmpl *t = load_template(k_templates[k]);
        if (!t && !shared_path("chat-templates")) SKIP("../shared/chat-templates is not there");
        REQUIRE(t);
        char path[512];
        snprintf(path, sizeof path, "tests/data/%s.tools.cases.json", k_templates[k]);
        int n, ok = check_cases(t, path, false, &n);
        CHECKF(ok == n && n == 5, "%s: %d of %d tool cases match", k_templates[k], ok, n);
        sd_tmpl_free(t);
    }
}

/* Renders src with vars (JSON text); returns the output or "ERR:<message>" in a static buffer. */
static const char *render(const char *src, const char *vars) {
    static char buf[4096];
    sd_err err = {{0}};
    sd_tmpl *t = sd_tmpl_parse(src, strlen(src), &err);
    if (!t) {
        snprintf(buf, sizeof buf, "ERR:%s", err.msg);
        return buf;
    }
    json_t *v = json_loads(vars ? vars : "{}", 0, NULL);
    char *out;
    size_t n;
    if (!v || sd_tmpl_render(t, v, &out, &n, &err)) snprintf(buf, sizeof buf, "ERR:%s", v ? err.msg : "bad vars");
    else {
        snprintf(buf, sizeof buf, "%s", out);
        free(out);
    }
    json_decref(v);
    sd_tmpl_free(t);
    return buf;
}

/* Expected renderings checked against Python's jinja2 3.1 (trim_blocks, lstrip_blocks). */
static const struct {
    const char *src, *vars, *want;
} k_semantics[] = {
    /* whitespace control */
    {"a  {%- if 1 %}  b  {% endif -%}  c", NULL, "a  b  c"},
    {"x\n  {% if 1 %}\n  y\n  {% endif %}\nz", NULL, "x\n  y\nz"},
    {"a {%+ if 1 %}b{% endif %}", NULL, "a b"},
    {"{# c #}\n  {# d #}\nx\n", NULL, "x"},
    {"{{ 'a' }}\n{{ 'b' -}}\n  c", NULL, "a\nbc"},
    {"line\r\nnext\r\n", NULL, "line\nnext"},
    /* scoping: a loop body gets a fresh scope each iteration; macros see later top-level sets */
    {"{% set x = 1 %}{% for i in [1,2] %}{{ x }}{% set x = x+10 %}{{x}};{% endfor %}{{x}}", NULL, "111;111;1"},
    {"{% macro f() %}{{ z }}{% endmacro %}{% set z = 5 %}{{ f() }}", NULL, "5"},
    {"{% set ns = namespace(a=1) %}{% for i in [1,2,3] %}{% set ns.a = ns.a + i %}{% endfor %}{{ ns.a }}", NULL, "7"},
    /* loops */
    {"{% for a, b in {'x':1, 'y':2}|items %}{{a}}{{b}}{{ loop.index }}{{ loop.revindex }}{{ loop.first }}"
     "{{ loop.last }}{{ loop.length }}{{ loop.previtem }}{% endfor %}", NULL,
     "x112TrueFalse2y221FalseTrue2('x', 1)"},
    {"{% for i in range(5) %}{% if i == 1 %}{% continue %}{% endif %}{% if i == 3 %}{% break %}{% endif %}{{ i }}"
     "{% endfor %}", NULL, "02"},
    {"{% for i in [1,2,3] if i != 2 %}{{ loop.index }}{{ loop.length }}{{ i }}{% endfor %}", NULL, "121223"},
    {"{% for i in [1,2,3] %}{{ loop.cycle('a','b') }}{{ loop.nextitem }}{{ loop.revindex0 }}{% endfor %}", NULL, "a22b31a0"},
    {"{% for a in x %}a{% else %}empty{% endfor %}", NULL, "empty"},
    /* macros */
    {"{% macro f(a, b=2) %}{{a}}{{b}}{% endmacro %}{{ f(1) }}{{ f(1, 3) }}{{ f(b=5, a=0) }}{{ f() }}", NULL, "1213052"},
    {"{% macro f(a) %}{{a}}{% endmacro %}{{ f(1, 2) }}", NULL, "ERR:TypeError: macro 'f' takes not more than 1 argument(s)"},
    {"{% macro f(a) %}{{a}}{% endmacro %}{{ f(1, c=3) }}", NULL, "ERR:TypeError: macro 'f' takes no keyword argument 'c'"},
    /* values print as Python prints them */
    {"{{ [1,2] }}{{ {'a':1.0, 'b':none} }}{{ \"it's\" }}{{ [\"it's\", 'a\"b'] }}{{ 1e15 }} {{ 1e16 }} {{ 0.0001 }} {{ 1/3 }}",
     NULL, "[1, 2]{'a': 1.0, 'b': None}it's[\"it's\", 'a\"b']1000000000000000.0 1e+16 0.0001 0.3333333333333333"},
    {"{{ (1,) }}{{ true }}{{ (1,2) }}{{ none }}", NULL, "(1,)True(1, 2)None"},
    {"{{ 3.0 }} {{ 1e100 }} {{ -0.0 }} {{ 2.5e-7 }} {{ 0.1+0.2 }} {{ 12345678901234567.0 }}", NULL,
     "3.0 1e+100 -0.0 2.5e-07 0.30000000000000004 1.2345678901234568e+16"},
    /* operators */
    {"{{ 'abc' * 2 }}{{ 2 * 'ab' }}{{ 7 // 2 }}{{ 7 / 2 }}{{ 7 % 3 }}{{ -7 // 2 }}{{ 2 ** 10 }}", NULL, "abcabcabab33.51-41024"},
    {"{{ 1 == 1.0 }}{{ 'a' < 'b' }}{{ [1,2] == [1,2] }}{{ 1 in [1] }}{{ 'a' in 'cat' }}{{ 'a' in {'a':1} }}", NULL,
     "TrueTrueTrueTrueTrueTrue"},
    {"{{ x ~ 'a' }}{{ not x }}{{ 1 if x }}|{{ x.y if x is defined else 3 }}", NULL, "aTrue|3"},
    {"{{ 'a' + 1 }}", NULL, "ERR:TypeError: line 1: can only concatenate str (not \"int\") to str"},
    {"{{ 5 // 0 }}", NULL, "ERR:ZeroDivisionError: line 1: integer division or modulo by zero"},
    {"{{ \"'\"|safe + \"'\" }}", NULL, "'&#39;"},
    /* undefined */
    {"{{ x }}{{ x|length }}{{ x|trim }}|{{ x|list }}{{ none.y }}", NULL, "0|[]"},
    {"{{ x.y }}", NULL, "ERR:UndefinedError: 'x' is undefined"},
    {"{{ {}.y.z }}", NULL, "ERR:UndefinedError: 'dict object' has no attribute 'y'"},
    {"{{ [1,2,3][5].x }}", NULL, "ERR:UndefinedError: list object has no element 5"},
    {"{{ 'abc'.foo() }}", NULL, "ERR:UndefinedError: 'str object' has no attribute 'foo'"},
    {"{{ m[0]['role'] }}", "{\"m\": []}", "ERR:UndefinedError: list object has no element 0"},
    /* subscripts and slices by character */
    {"{{ [1,2,3][-1] }}{{ 'abc'[1] }}{{ [1,2,3][1:] }}{{ 'abc'[::-1] }}{{ 'h\xc3\xa9" "llo'[1:3] }}", NULL, "3b[2, 3]cba\xc3\xa9" "l"},
    /* filters */
    {"{{ {'a':[1,'x',{'b':true}], 'c': 1.5, 'd': none, 'e': '\xc3\xa9\\n\\u0001'}|tojson }}", NULL,
     "{\"a\": [1, \"x\", {\"b\": true}], \"c\": 1.5, \"d\": null, \"e\": \"\xc3\xa9\\n\\u0001\"}"},
    {"{{ {'a':[1], 'c': []}|tojson(indent=2) }}", NULL, "{\n  \"a\": [\n    1\n  ],\n  \"c\": []\n}"},
    {"{{ 'a\\nb\\n\\nc'|indent(2) }}|{{ 'a\\nb\\n\\nc'|indent(2, true) }}|{{ 'a\\nb\\n\\nc'|indent(2, true, true) }}", NULL,
     "a\n  b\n\n  c|  a\n  b\n\n  c|  a\n  b\n  \n  c"},
    {"{{ '{\\n'|indent(4, first=true) }}", NULL, "    {\n"},
    {"{{ ['B','a','b','A']|unique|list }}{{ [{'a':1},{'a':2}]|map(attribute='a')|list }}{{ ['a','b']|map('upper')|list }}"
     "{{ [1,2,3]|select('odd')|list }}{{ [{'t':1},{}]|selectattr('t','defined')|list }}"
     "{{ [{'t':1},{'t':2}]|rejectattr('t','equalto',2)|list }}", NULL,
     "['B', 'a'][1, 2]['A', 'B'][1, 3][{'t': 1}][{'t': 1}]"},
    {"{{ [1]|map('string')|tojson }}", NULL, "ERR:TypeError: Object of type generator is not JSON serializable"},
    {"{{ [3,1,2]|first }}{{ [3,1,2]|last }}{{ [3,1,2]|join('-') }}{{ ['a','b']|join }}{{ [{'a':1},{'a':2}]|join(',', attribute='a') }}",
     NULL, "323-1-2ab1,2"},
    {"{{ foo|default('d') }}{{ ''|default('d') }}{{ ''|default('d', true) }}", NULL, "dd"},
    {"{{ \"a'b\"|replace(\"'\", '\"') }}{{ 'aaa'|replace('a', 'b', 2) }}{{ 'Hello World'|lower }}{{ 'hello world'|title }}"
     "{{ 'hello world'|capitalize }}{{ 'x'|upper }}", NULL, "a\"bbbahello worldHello WorldHello worldX"},
    {"{{ {'b':1,'a':2}|dictsort }}{{ [3,1,2]|sort }}{{ [3,1,2]|sort(reverse=true) }}{{ [1,2,3]|sum }}{{ [3,1]|min }}"
     "{{ [3,1]|max }}{{ ['a','b']|reverse|list }}{{ '12'|int + 1 }}{{ '1.5'|float }}{{ -3|abs }}{{ 2.567|round(2) }}",
     NULL, "[('a', 2), ('b', 1)][1, 2, 3][3, 2, 1]613['b', 'a']131.532.57"},
    {"{{ 'x'|int }}{{ 3.9|int }}{{ '3.5'|int }}{{ 2.5|round }}{{ 3.5|round }}", NULL, "0332.04.0"},
    {"{{ 3|length }}", NULL, "ERR:TypeError: line 1: object of type 'int' has no len()"},
    /* string methods */
    {"{{ '  x  '|trim }}|{{ 'a,b,,c'.split(',') }}{{ ' a  b '.split() }}{{ 'abc'.startswith('a') }}"
     "{{ 'xxaxx'.strip('x') }}{{ 'a b'.split(' ', 1) }}{{ 'ab'.startswith(('x','a')) }}", NULL,
     "x|['a', 'b', '', 'c']['a', 'b']Truea['a', 'b']True"},
    {"{{ {'a':1}.get('a') }}{{ {'a':1}.get('b') }}{{ {'a':1}.get('b', 3) }}{{ {'a':1}.keys()|list }}", NULL, "1None3['a']"},
    /* tests */
    {"{{ [] is iterable }}{{ '' is iterable }}{{ {} is mapping }}{{ 1 is number }}{{ true is number }}{{ 1.0 is integer }}"
     "{{ true is boolean }}{{ none is none }}{{ x is iterable }}{{ 'a' is string }}{{ 3 is divisibleby 3 }}", NULL,
     "TrueTrueTrueTrueTrueFalseTrueTrueTrueTrueTrue"},
    /* globals */
    {"{{ raise_exception('boom') }}", NULL, "ERR:TemplateError: boom"},
    {"{{ strftime_now('%d %b %Y') }}", NULL, "15 Jan 2025"},
    {"{{ range(3)|list }}{{ range(1,5,2)|list }}{{ dict(a=1) }}", NULL, "[0, 1, 2][1, 3]{'a': 1}"},
    /* strings: escapes, adjacent literals */
    {"{{ 'a' \"b\" }}{{ 'x\\ty\\u00e9\\x41\\\\n' }}", NULL, "abx\ty\xc3\xa9" "A\\n"},
    /* set block */
    {"{% set x %}a{{ 1 }}b{% endset %}[{{ x }}]", NULL, "[a1b]"},
    /* Hugging Face's {% generation %} marks assistant text for training masks: rendering keeps its body */
    {"{% for m in ['a', 'b'] %}{% generation %}<{{ m }}>{% endgeneration %}\n{% endfor %}", NULL, "<a><b>"},
    /* call blocks: the macro's caller() renders the block, with arguments; varargs and kwargs */
    {"{% macro wrap(tag) %}<{{ tag }}>{{ caller() }}</{{ tag }}>{% endmacro %}{% call wrap('b') %}x{{ 1 + 1 }}{% endcall %}",
     NULL, "<b>x2</b>"},
    {"{% macro each(items) %}{% for i in items %}{{ caller(i, loop.index) }}{% endfor %}{% endmacro %}"
     "{% call(x, n) each(['a','b']) %}{{ n }}={{ x }};{% endcall %}", NULL, "1=a;2=b;"},
    {"{% macro list(items) %}<ul>{% for i in items %}<li>{{ caller(i) }}</li>{% endfor %}</ul>{% endmacro %}"
     "{% call(item) list(['x', 'y']) %}{% filter upper %}{{ item }}{% endfilter %}{% endcall %}", NULL, "<ul><li>X</li><li>Y</li></ul>"},
    {"{% macro f() %}{{ caller() }}{% endmacro %}{{ f() }}", NULL, "ERR:UndefinedError: No caller defined"},
    {"{% macro f() %}x{% endmacro %}{% call f() %}y{% endcall %}", NULL,
     "ERR:TypeError: macro 'f' was invoked with two values for the special caller argument. This is most likely a bug."},
    {"{% macro f(a, caller=none) %}{{ a }}{% endmacro %}{{ f(1) }}", NULL, "1"},
    {"{% macro f(a) %}{{ a }}{{ varargs }}{{ kwargs }}{% endmacro %}{{ f(1, 2, 3, k=4) }}", NULL, "1(2, 3){'k': 4}"},
    /* filter blocks and filtered set blocks */
    {"{% filter upper %}ab{{ 'c' }}{% endfilter %}{% filter replace('a', 'b')|trim %} aa {% endfilter %}", NULL, "ABCbb"},
    {"{% set x | trim %}  hi  {% endset %}[{{ x }}]", NULL, "[hi]"},
    /* recursive loops: loop(items) renders the body one level deeper */
    {"{% for n in tree recursive %}{{ n.name }}{{ loop.depth }}{{ loop.depth0 }}{% if n.children %}({{ loop(n.children) }})"
     "{% endif %}{% endfor %}",
     "{\"tree\": [{\"name\": \"a\", \"children\": [{\"name\": \"b\"}, {\"name\": \"c\", \"children\": [{\"name\": \"d\"}]}]},"
     " {\"name\": \"e\"}]}", "a10(b21c21(d32))e10"},
    {"{% for n in tree recursive %}{% if loop.first %}[{% endif %}{{ n.v }}{{ loop(n.k) if n.k }}{% if loop.last %}]{% endif %}"
     "{% else %}-{% endfor %}", "{\"tree\": [{\"v\": 1, \"k\": []}, {\"v\": 2, \"k\": [{\"v\": 3}]}]}", "[12[3]]"},
    {"{% for i in [1] %}{{ loop([2]) }}{% endfor %}", NULL,
     "ERR:TypeError: The loop must have the 'recursive' marker to be called recursively."},
    /* with */
    {"{% set a = 1 %}{% with a = 2, b = a %}{{ a }}{{ b }}{% endwith %}{{ a }}{% with %}{% set c = 3 %}{{ c }}{% endwith %}"
     "{{ c is defined }}", NULL, "2113False"},
    /* Hugging Face's tojson(x, ensure_ascii, indent, separators, sort_keys) */
    {"{{ {'b': '\xc3\xa9\xf0\x9f\x98\x80', 'a': [1, {'d': none, 'c': 2}]}|tojson(ensure_ascii=true, sort_keys=true) }}|"
     "{{ {'x': 1, 'y': [2]}|tojson(separators=(',', ':')) }}|{{ {'k': '\xc3\xa9'}|tojson(indent=2, ensure_ascii=false) }}", NULL,
     "{\"a\": [1, {\"c\": 2, \"d\": null}], \"b\": \"\\u00e9\\ud83d\\ude00\"}|{\"x\":1,\"y\":[2]}|{\n  \"k\": \"\xc3\xa9\"\n}"},
    {"{{ {1: 2, 'a': 3}|tojson(sort_keys=true) }}", NULL, "ERR:TypeError: '<' not supported between instances of 'str' and 'int'"},
    /* Python's %-formatting and the format filter */
    {"{{ '%s-%d-%05.2f-%x-%-4s|' % ('a', 7, 3.14159, 255, 'z') }}{{ '%(a)s=%(b)r' % {'a': 1, 'b': 'x'} }}{{ '%d%%' % 50 }}"
     "{{ '%s' % [1, 2] }}{{ '%c%c' % (72, 'i') }}", NULL, "a-7-03.14-ff-z   |1='x'50%[1, 2]Hi"},
    {"{{ '%+d % d %#o %#X %.3d %i %u' % (5, 5, 8, 255, 7, 3.9, -2.5) }}|{{ '%5.1s|' % 'h\xc3\xa9llo' }}{{ '%*d|%-*d|' % (4, 1, 3, 2) }}"
     "{{ '%e %g %G %.3f %010.3f %-8.2e|' % (12345.678, 0.00001, 1e20, -2.5, -3.14159, 1.5) }}", NULL,
     "+5  5 0o10 0XFF 007 3 -2|    h|   1|2  |1.234568e+04 1e-05 1E+20 -2.500 -00003.142 1.50e+00|"},
    {"{{ '%s %r' % (none, 'it\\'s') }}{{ '%s' % (1,) }}{{ 'x' % {} }}{{ '%s' % {'a': 1} }}{{ '%5s|%-5s|' % (true, 1.5) }}"
     "{{ 'ab' % () }}{{ 'ab' % [] }}{{ '%s' % x }}", NULL, "None \"it's\"1x{'a': 1} True|1.5  |abab"},
    {"{{ '%c' % 128512 }}{{ '%5c|' % 'a' }}{{ '%-3c|' % 66 }}{{ '%05s|%-05d|%+05d|%05x' % ('a', 3, 3, 255) }}", NULL,
     "\xf0\x9f\x98\x80    a|B  |    a|3    |+0003|000ff"},
    {"{{ '%d' % 'a' }}", NULL, "ERR:TypeError: %d format: a real number is required, not str"},
    {"{{ '%s %s' % ('a',) }}", NULL, "ERR:TypeError: not enough arguments for format string"},
    {"{{ '%s' % () }}", NULL, "ERR:TypeError: not enough arguments for format string"},
    {"{{ 'x' % 1 }}", NULL, "ERR:TypeError: not all arguments converted during string formatting"},
    {"{{ '%z' % 1 }}", NULL, "ERR:ValueError: unsupported format character 'z' (0x7a) at index 1"},
    {"{{ '%x' % 1.5 }}", NULL, "ERR:TypeError: %x format: an integer is required, not float"},
    {"{{ '%f' % 'a' }}", NULL, "ERR:TypeError: must be real number, not str"},
    {"{{ '%(a)s' % {'b': 1} }}", NULL, "ERR:KeyError: 'a'"},
    {"{{ '%d' % x }}", NULL, "ERR:UndefinedError: 'x' is undefined"},
    {"{{ '%s, %s!'|format('Hello', 'World') }}{{ '%(x)s-%(y)d'|format(x='a', y=2) }}{{ '%.1f%%'|format(99.44) }}", NULL,
     "Hello, World!a-299.4%"},
};

static void test_semantics(void) {
    for (size_t i = 0; i < sizeof k_semantics / sizeof k_semantics[0]; i++) {
        const char *got = render(k_semantics[i].src, k_semantics[i].vars);
        CHECKF(!strcmp(got, k_semantics[i].want), "case %zu: %s\n    got  [%s]\n    want [%s]", i, k_semantics[i].src, got,
               k_semantics[i].want);
    }
}

/* Unsupported or malformed templates fail at parse time naming the construct and its line. */
static void test_syntax_errors(void) {
    static const struct {
        const char *src, *want;
    } cases[] = {
        {"ok\n{% include 'x' %}", "line 2: unsupported construct 'include'"},
        {"{% extends 'x' %}", "unsupported construct 'extends'"},
        {"\n\n{{ x|wordwrap }}", "line 3: unsupported construct: filter 'wordwrap'"},
        {"{{ x is foo }}", "unsupported construct: test 'foo'"},
        {"{{ 1 }}\n{% import 'x' as y %}", "line 2: unsupported construct 'import'"},
        {"{% raw %}{{ x }}{% endraw %}", "unsupported construct 'raw'"},
        {"{% call x %}{% endcall %}", "expected a call after 'call'"},
        {"{% filter nosuch %}{% endfilter %}", "unsupported construct: filter 'nosuch'"},
        {"{% call f() %}", "expected 'endcall'"},
        {"{% endfilter %}", "unexpected 'endfilter'"},
        {"{% if x %}", "unexpected end of template, expected 'elif'"},
        {"{% endif %}", "unexpected 'endif'"},
        {"{% endgeneration %}", "unexpected 'endgeneration'"},
        {"{% generation %}x", "expected 'endgeneration'"},
        {"{{ 'abc }}", "unterminated string"},
        {"{{ x }", "unexpected '}'"},
        {"{# never closed", "missing end of comment tag"},
        {"{{ 1 + }}", "unexpected end of print statement"},
        {"{% frobnicate %}", "unknown tag 'frobnicate'"},
        {"{{ 99999999999999999999 }}", "integer literal too large"},
        {"ok\n\xff{{ x }}", "line 2: the template is not valid UTF-8"},
        {"{{ x \xc3\xa9 }}", "unexpected character '\xc3\xa9'"}, /* the character, not a cut byte */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sd_err err = {{0}};
        sd_tmpl *t = sd_tmpl_parse(cases[i].src, strlen(cases[i].src), &err);
        CHECKF(!t && strstr(err.msg, cases[i].want) && !strncmp(err.msg, "TemplateSyntaxError: ", 21),
               "%s: got '%s'", cases[i].src, t ? "(parsed)" : err.msg);
        sd_tmpl_free(t);
    }
}

/* Hostile templates end in an error, not a crash, a hang or unbounded memory. */
static void test_limits(void) {
    char *deep = malloc(200003);
    REQUIRE(deep);
    memset(deep, '(', 200000);
    memcpy(deep, "{{ ", 3);
    deep[200000] = '\0';
    const char *got = render(deep, NULL);
    CHECKF(strstr(got, "nested") != NULL, "deep parentheses: %s", got);
    for (int i = 0; i < 100000; i++) memcpy(deep + 3 + 2 * i, "-+", 2);
    strcpy(deep + 200003 - 8, "1 }}");
    got = render(deep, NULL);
    CHECKF(strstr(got, "nested") != NULL, "deep unary chain: %s", got);
    for (int i = 0; i < 30000; i++) memcpy(deep + 3 + 4 * i, "1 + ", 4);
    strcpy(deep + 3 + 4 * 30000, "1 }}");
    got = render(deep, NULL);
    CHECKF(strstr(got, "nested too deeply") != NULL, "long left-deep sum: %s", got);
    free(deep);
    got = render("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", NULL);
    CHECKF(!strncmp(got, "ERR:RecursionError", 18), "infinite macro recursion: %s", got);
    got = render("{% set ns = namespace(s='xy') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}", NULL);
    CHECKF(!strncmp(got, "ERR:MemoryError", 15), "doubling string: %s", got);
    got = render("{{ 'x' * 1000000000 }}", NULL);
    CHECKF(!strncmp(got, "ERR:MemoryError", 15), "huge repeat: %s", got);
    got = render("{% for i in range(1000000) %}{% for j in range(100) %}{% endfor %}{% endfor %}", NULL);
    CHECKF(strstr(got, "evaluation steps") != NULL, "nested huge loops: %s", got);
    got = render("{% set ns = namespace() %}{% set ns.me = ns %}{{ ns }}", NULL);
    CHECKF(!strncmp(got, "ERR:RecursionError", 18), "self-referencing namespace: %s", got);
    got = render("{{ range(10000000000) }}", NULL);
    CHECKF(!strncmp(got, "ERR:OverflowError", 17), "huge range: %s", got);
}

/* Truncations and byte flips of the real templates: every one parses or fails cleanly, and whatever
 * parses renders or fails cleanly (run under SAN=1 this is the fuzz check). */
static void test_mutations(void) {
    const char *vars = "{\"messages\": [{\"role\": \"system\", \"content\": \"s\"}, {\"role\": \"user\", \"content\": \"hi\"},"
                       " {\"role\": \"assistant\", \"content\": \"yo\"}], \"add_generation_prompt\": true,"
                       " \"bos_token\": \"<s>\", \"eos_token\": \"</s>\"}";
    json_t *v = json_loads(vars, 0, NULL);
    REQUIRE(v);
    uint64_t rng = 0x9E3779B97F4A7C15ull;
    int parsed = 0, tried = 0;
    for (int k = 0; k < N_TEMPLATES; k++) {
        char rel[256];
        snprintf(rel, sizeof rel, "chat-templates/%s.jinja", k_templates[k]);
        const char *path = shared_path(rel);
        if (!path) {
            json_decref(v);
            SKIP("../shared/chat-templates is not there");
        }
        size_t n;
        char *src = read_all(path, &n);
        REQUIRE(src);
        char *mut = malloc(n + 1);
        for (int trial = 0; trial < 60; trial++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            size_t len = trial < 30 ? (size_t)(rng >> 33) % (n + 1) : n; /* a prefix, or the whole with flips */
            memcpy(mut, src, len);
            if (trial >= 30)
                for (int f = 0; f < 3; f++) {
                    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
                    mut[(rng >> 33) % n] = "{}%#-+()[]'\"|.,=~ \nax\0"[(rng >> 20) % 22];
                }
            sd_err err = {{0}};
            sd_tmpl *t = sd_tmpl_parse(mut, len, &err);
            tried++;
            if (!t) {
                CHECKF(err.msg[0] != '\0', "%s: a failed parse without a message", k_templates[k]);
                continue;
            }
            parsed++;
            char *out;
            size_t on;
            if (sd_tmpl_render(t, v, &out, &on, &err) == 0) free(out);
            else CHECKF(err.msg[0] != '\0', "%s: a failed render without a message", k_templates[k]);
            sd_tmpl_free(t);
        }
        free(mut);
        free(src);
    }
    json_decref(v);
    CHECK(tried == 60 * N_TEMPLATES);
    CHECK(parsed > 0 && parsed < tried); /* both paths were exercised */
}

/* `specd template` prints one JSON object per case. */
static void test_cmd_template(void) {
    const char *tmpl = shared_path("chat-templates/Qwen-Qwen2.5-7B-Instruct.jinja");
    const char *cases = shared_path("chat-templates/Qwen-Qwen2.5-7B-Instruct.cases.json");
    if (!tmpl || !cases) SKIP("../shared/chat-templates is not there");
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s/specd template --chat-template %s --cases %s", getenv("BUILD") ? getenv("BUILD") : "build",
             tmpl, cases);
    FILE *p = popen(cmd, "r");
    REQUIRE(p);
    json_t *want = json_load_file(cases, 0, NULL);
    REQUIRE(want);
    char line[65536];
    size_t i = 0;
    while (fgets(line, sizeof line, p)) {
        json_t *got = json_loads(line, 0, NULL), *c = json_array_get(want, i++);
        CHECKF(got && c, "line %zu is not JSON: %s", i, line);
        if (got && c) {
            json_t *exp = json_object_get(c, "expected");
            if (exp) CHECK(json_equal(json_object_get(got, "rendered"), exp));
            else CHECK(json_is_string(json_object_get(got, "error")));
        }
        json_decref(got);
    }
    CHECK_EQ_INT(i, json_array_size(want));
    CHECK_EQ_INT(pclose(p), 0);
    json_decref(want);
    snprintf(cmd, sizeof cmd, "%s/specd template --cases x.json 2>/dev/null", getenv("BUILD") ? getenv("BUILD") : "build");
    int rc = system(cmd);
    CHECK(WIFEXITED(rc) && WEXITSTATUS(rc) == 2); /* neither a template nor a model: usage */
}

/* -m MODEL takes the GGUF's tokenizer.chat_template; --vars renders one object as plain text. */
static void test_cmd_template_model(void) {
    char dir[] = "/tmp/specd-test-tmplcmd-XXXXXX";
    REQUIRE(mkdtemp(dir));
    char model[300], vars[300], cmd[1024];
    snprintf(model, sizeof model, "%s/m.gguf", dir);
    snprintf(vars, sizeof vars, "%s/v.json", dir);
    gguf_writer *w = gguf_writer_new(32);
    REQUIRE(w);
    gguf_w_str(w, "general.architecture", "llama");
    gguf_w_str(w, "tokenizer.chat_template", "{% for m in messages %}<{{ m.role }}>{{ m.content | trim }}{% endfor %}");
    sd_err err = {{0}};
    CHECKF(gguf_writer_save(w, model, &err) == 0, "%s", err.msg);
    gguf_writer_free(w);
    FILE *f = fopen(vars, "w");
    REQUIRE(f);
    fputs("{\"messages\": [{\"role\": \"user\", \"content\": \" hi \"}, {\"role\": \"bot\", \"content\": \"yo\"}]}", f);
    fclose(f);
    const char *b = getenv("BUILD") ? getenv("BUILD") : "build";
    snprintf(cmd, sizeof cmd, "%s/specd template -m %s --vars %s", b, model, vars);
    FILE *p = popen(cmd, "r");
    REQUIRE(p);
    char out[256] = "";
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = '\0';
    CHECK_EQ_INT(pclose(p), 0);
    CHECK_STR_EQ(out, "<user>hi<bot>yo");
    /* a model without a template says so */
    w = gguf_writer_new(32);
    gguf_w_str(w, "general.architecture", "llama");
    CHECK(gguf_writer_save(w, model, &err) == 0);
    gguf_writer_free(w);
    snprintf(cmd, sizeof cmd, "%s/specd template -m %s --vars %s 2>&1", b, model, vars);
    p = popen(cmd, "r");
    REQUIRE(p);
    n = fread(out, 1, sizeof out - 1, p);
    out[n] = '\0';
    CHECK(pclose(p) != 0 && strstr(out, "no chat template"));
    unlink(model);
    unlink(vars);
    rmdir(dir);
}

int main(void) {
    RUN(test_real_templates);
    RUN(test_tool_cases);
    RUN(test_semantics);
    RUN(test_syntax_errors);
    RUN(test_limits);
    RUN(test_mutations);
    RUN(test_cmd_template);
    RUN(test_cmd_template_model);
    return TEST_DONE();
}
