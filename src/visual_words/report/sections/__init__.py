"""The report's sections, each a function from data to a `Section` (report/section.py), in page order:

    claims_profile.claims_profile_section(cfg, …)   the claims a profile checks with stated power (report.claims)
    claims.artifact_claims(cells, eps, tolerance)   every ARTIFACT.md §5 claim judged; transfer shares
    quantitative.quantitative(evaluation, cells, …) cells, ours next to the paper, Fig. 3, Fig. 6, headline numbers
    eps.eps_section(eps, banner)                    where the words land: ε-ball statistics
    layers.layers_section(tsne, truncation, …)      Fig. 7 and the t-SNE figures
    qualitative.qualitative(gallery, …)             Fig. 4, Fig. 5-style and appendix image grids

The stage (report/stage.py) reads the inputs and hands the sections to the builder (report/builder.py).
"""
