"""The research report: gap analysis, preclean vs clean-after, cleaning curve, coefficient
table and coefficient prediction, computed from tracked results files."""
