"""The generation defaults written outside Python agree with common.defaults: the Makefile,
export/onnx_generate.py (self-contained, so it repeats them), the C++ generator and the web page
with its Node twin."""

import ast
import re
from pathlib import Path

from common import defaults
from common.cli import OneLineParser

ROOT = Path(__file__).resolve().parents[1]
EXPECTED = (defaults.PROMPT, defaults.TOKENS, defaults.TEMPERATURE)


def one_match(pattern: str, text: str) -> str:
    matches = re.findall(pattern, text, flags=re.MULTILINE)
    assert len(matches) == 1, f"{pattern!r} matches {len(matches)} times"
    return matches[0]


def test_makefile_defaults():
    makefile = (ROOT / "Makefile").read_text()
    values = [one_match(rf"^{name} \?= (.*)$", makefile) for name in ("PROMPT", "TOKENS", "TEMPERATURE")]
    assert (values[0], int(values[1]), float(values[2])) == EXPECTED


def test_onnx_generate_constants():
    tree = ast.parse((ROOT / "export" / "onnx_generate.py").read_text())
    found = [node.value for node in tree.body if isinstance(node, ast.Assign)
             and [ast.unparse(t) for t in node.targets] == ["(PROMPT, TOKENS, TEMPERATURE)"]]
    assert len(found) == 1
    assert ast.literal_eval(found[0]) == EXPECTED


def test_cpp_generator_defaults():
    source = (ROOT / "export" / "cpp" / "generate.cpp").read_text()
    prompt = one_match(r'std::string prompt = "([^"]*)";', source)
    tokens = one_match(r"\blong tokens = (\d+)\b", source)
    temperature = one_match(r"\bdouble temperature = ([0-9.]+);", source)
    assert (prompt, int(tokens), float(temperature)) == EXPECTED


def test_generate_parser_defaults():
    from export.generate import add_sampling_arguments

    p = OneLineParser(prog="test")
    add_sampling_arguments(p)
    args = p.parse_args([])
    assert (args.prompt, args.tokens, args.temperature) == EXPECTED
    assert args.top_k is None and args.seed is None


def test_web_page_and_node_defaults():
    page = (ROOT / "web" / "index.html").read_text(encoding="utf-8")
    prompt = one_match(r'<textarea id="prompt"[^>]*>([^<]*)</textarea>', page)
    tokens = one_match(r'<input id="tokens"[^>]* value="([^"]*)"', page)
    temperature = one_match(r'<input id="temperature"[^>]* value="([^"]*)"', page)
    assert (prompt, int(tokens), float(temperature)) == EXPECTED
    sampling = (ROOT / "web" / "sampling.mjs").read_text(encoding="utf-8")
    assert int(one_match(r'number\("tokens", tokens, (\d+)', sampling)) == defaults.TOKENS
    assert float(one_match(r'number\("temperature", temperature, ([0-9.]+)\)', sampling)) == defaults.TEMPERATURE
    assert float(one_match(r"temperature = ([0-9.]+), topK", sampling)) == defaults.TEMPERATURE
    node = (ROOT / "web" / "generate.mjs").read_text(encoding="utf-8")
    assert one_match(r'prompt: \{ type: "string", default: "([^"]*)" \}', node) == defaults.PROMPT
