"""Completing a trait's prompts with a model variant (`steerops generate`), optionally vetted
by the judge.

Importing the package is cheap; import the submodule you need."""
