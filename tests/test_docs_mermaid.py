"""Every Mermaid block of the README and docs/ parses with Mermaid's own parser."""

from comfy_worker_dev import mermaid


def test_docs_have_the_three_diagrams():
    types = {r.type for r in mermaid.parse(mermaid.documented_diagrams())}
    assert {"flowchart-v2", "sequence", "stateDiagram"} <= types


def test_every_documented_diagram_parses():
    diagrams = mermaid.documented_diagrams()
    assert diagrams
    failures = [f"{r.name}: {r.error}" for r in mermaid.parse(diagrams) if not r.ok]
    assert not failures, "\n".join(failures)


def test_a_broken_diagram_fails():
    good = mermaid.Diagram("good", "stateDiagram-v2\n    [*] --> Booting\n    Booting --> Ready: ComfyUI answers\n")
    broken = [
        mermaid.Diagram("arrow to nothing", "flowchart LR\n    Caller -->\n"),
        mermaid.Diagram("message without target", "sequenceDiagram\n    Caller->>: POST /run\n"),
        mermaid.Diagram("unclosed alt", "sequenceDiagram\n    alt ok\n    A->>B: x\n"),
        mermaid.Diagram("unknown diagram", "flowchat LR\n    A --> B\n"),
    ]
    results = {r.name: r for r in mermaid.parse([good, *broken])}
    assert results["good"].ok
    for diagram in broken:
        assert not results[diagram.name].ok, diagram.name
        assert results[diagram.name].error


def test_blocks_are_found_with_their_line():
    text = "# t\n\n```mermaid\nflowchart LR\n  A --> B\n```\n\n```json\n{}\n```\n"
    [diagram] = mermaid.diagrams_in(text, "x.md")
    assert diagram.name == "x.md:3" and diagram.code == "flowchart LR\n  A --> B\n"
