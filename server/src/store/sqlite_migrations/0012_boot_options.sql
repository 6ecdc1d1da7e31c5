-- A workflow's boot options (docs/bmc.md) as JSON; NULL: none.
ALTER TABLE workflows ADD COLUMN boot_options TEXT;
