-- How a template was applied: 'kiln' (kind: Template, a strict body) or
-- 'tinkerbell' (apiVersion: tinkerbell.org/v1alpha1 Template, whose unknown
-- body fields are warnings, as Tinkerbell ignores them). Workflows created
-- later from a stored template read its body the same way.
ALTER TABLE templates ADD COLUMN format TEXT NOT NULL DEFAULT 'kiln';
