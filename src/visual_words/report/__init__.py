"""The report: the paper's figures regenerated from our runs, the comparison with the paper's numbers, the HTML page.

    paper.paper_table()            the paper's Fig. 3 / Fig. 6 numbers (paper_numbers.yaml) as a DataFrame
    compare.compare(cells, paper)  ours next to theirs per cell: difference, inside the paper's CI or tolerance
    figures.*                      matplotlib (Agg) figures; each returns a Figure, `save` writes PNG/SVG
    sections.*                     one function per part of the page: data in, a section.Section out
    builder.ReportBuilder          saves the sections' figures and files, writes index.html from the templates
    stage.run(cfg)                 reads the stages' outputs, writes reports/<profile>/ (index.html, metrics.json)

Layer: report (docs/design.md, "Layers"; `make lint` enforces it). It may import claims, analysis, evaluate,
toolkit, train, transfer, plan, reuse, data, models, eps_ball and the foundations; never commands.
"""
