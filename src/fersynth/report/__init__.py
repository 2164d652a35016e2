"""Pages for people, rendered from what the stages wrote: the HTML report, contact sheets, the README's result
tables and the offline ``dvc plots`` template."""
