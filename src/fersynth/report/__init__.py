"""Pages for people, rendered from what the stages wrote: the HTML report, contact sheets, the result
tables of README.md and docs/ and the offline ``dvc plots`` template."""
