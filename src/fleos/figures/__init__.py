"""The paper's figures, one module per figure (fig2a … fig6).

Each module has `table(inputs, config) -> rows`, the figure's agreement table built from the
workflow's files without drawing anything (matplotlib is not imported), `draw(rows, inputs,
config) -> Figure`, and `summary(rows) -> lines` for the report caption. `common` holds what
the tables share, `style` what the drawings share, and `render.render_figure` writes a figure's
PNG, PDF, CSV and summary. The registry of which files a figure reads is `fleos.pipeline`.
"""
