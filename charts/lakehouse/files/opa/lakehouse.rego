# Trino's OPA access control for the lakehouse, generated policy data in data.lakehouse
# (`lakehouse policy compile`). Configure Trino with:
#   opa.policy.uri=.../v1/data/lakehouse/trino/allow
#   opa.policy.batched-uri=.../v1/data/lakehouse/trino/batch
#   opa.policy.row-filters-uri=.../v1/data/lakehouse/trino/rowFilters
#   opa.policy.batch-column-masking-uri=.../v1/data/lakehouse/trino/batchColumnMasks
# The embedded engine applies the same decisions (services/lakehouse/governance/_policy.py); a test
# evaluates this module on Trino-shaped inputs and compares.
package lakehouse.trino

import rego.v1

# the generated documents only: `data.lakehouse` as a whole holds this package's own rules too
# (data.lakehouse.trino), which OPA rejects as a recursion
lh := {
	"catalog": data.lakehouse.catalog,
	"operators": data.lakehouse.operators,
	"users": data.lakehouse.users,
	"roles": data.lakehouse.roles,
	"tables": data.lakehouse.tables,
}

principal := lh.users[input.context.identity.user]

# the platform's operator account: builds the layers, administers, may impersonate users; reads
# data as stored (no filter, no mask), like the operator's embedded engine
operator if input.context.identity.user in lh.operators

# -- which tables a user reads ----------------------------------------------------------------

grants(role, schema, _) if schema in lh.roles[role].layers

grants(role, schema, table) if concat(".", [schema, table]) in lh.roles[role].tables

# a role's row filter must reach the table (a column, or a lookup), unless it is shared data
reaches(role, _, _) if lh.roles[role].row_filter == null

reaches(role, schema, table) if lh.tables[schema][table].row_filters[lh.roles[role].row_filter]

reaches(_, schema, table) if lh.tables[schema][table].shared

contributing(schema, table) := {role |
	some role in principal.roles
	lh.tables[schema][table]
	grants(role, schema, table)
	reaches(role, schema, table)
}

readable(schema, table) if count(contributing(schema, table)) > 0

# -- allow and batch --------------------------------------------------------------------------

default allow := false

allow if operator

allow if {
	input.action.operation == "ExecuteQuery"
	principal
}

allow if {
	input.action.operation in {"AccessCatalog", "ShowSchemas"}
	input.action.resource.catalog.name == lh.catalog
	principal
}

allow if {
	input.action.operation == "ShowTables"
	input.action.resource.schema.catalogName == lh.catalog
	some table in object.keys(lh.tables[input.action.resource.schema.schemaName])
	readable(input.action.resource.schema.schemaName, table)
}

allow if {
	input.action.operation in {"SelectFromColumns", "ShowColumns", "FilterColumns"}
	t := input.action.resource.table
	t.catalogName == lh.catalog
	readable(t.schemaName, t.tableName)
}

# the catalog's information_schema, which Trino itself filters through FilterSchemas,
# FilterTables and FilterColumns below: a user finds there only what they may read (SQL tools
# and dbt list relations through it)
allow if {
	input.action.operation in {"SelectFromColumns", "FilterColumns"}
	t := input.action.resource.table
	t.catalogName == lh.catalog
	t.schemaName == "information_schema"
	principal
}

batch contains i if {
	input.action.operation == "FilterColumns"
	t := input.action.filterResources[0].table
	t.catalogName == lh.catalog
	t.schemaName == "information_schema"
	principal
	some i, _ in t.columns
}

batch contains i if {
	operator
	input.action.operation != "FilterColumns"
	some i, _ in input.action.filterResources
}

batch contains i if {
	operator
	input.action.operation == "FilterColumns"
	some i, _ in input.action.filterResources[0].table.columns
}

batch contains i if {
	input.action.operation == "FilterCatalogs"
	principal
	some i, r in input.action.filterResources
	r.catalog.name == lh.catalog
}

batch contains i if {
	input.action.operation == "FilterSchemas"
	some i, r in input.action.filterResources
	r.schema.catalogName == lh.catalog
	some table in object.keys(lh.tables[r.schema.schemaName])
	readable(r.schema.schemaName, table)
}

batch contains i if {
	input.action.operation == "FilterTables"
	some i, r in input.action.filterResources
	r.table.catalogName == lh.catalog
	readable(r.table.schemaName, r.table.tableName)
}

batch contains i if {
	input.action.operation == "FilterColumns"
	t := input.action.filterResources[0].table
	t.catalogName == lh.catalog
	readable(t.schemaName, t.tableName)
	some i, _ in t.columns
}

# -- row filters: the contributing roles' filters OR-ed; none if one of them sees every row ----

requested := input.action.resource.table

unfiltered if {
	some role in contributing(requested.schemaName, requested.tableName)
	lh.roles[role].row_filter == null
}

unfiltered if lh.tables[requested.schemaName][requested.tableName].shared

filter_expressions contains sprintf(template, [principal.attributes[attribute]]) if {
	some role in contributing(requested.schemaName, requested.tableName)
	attribute := lh.roles[role].row_filter
	attribute != null
	template := lh.tables[requested.schemaName][requested.tableName].row_filters[attribute].template
}

combined(expressions) := expressions[0] if count(expressions) == 1

combined(expressions) := concat(" OR ", [sprintf("(%s)", [e]) | some e in expressions]) if count(expressions) > 1

rowFilters contains {"expression": combined(sort(filter_expressions))} if {
	input.action.operation == "GetRowFilters"
	requested.catalogName == lh.catalog
	readable(requested.schemaName, requested.tableName)
	not unfiltered
	count(filter_expressions) > 0
}

# -- column masks: sensitive columns masked for users without the clearance ----------------------

batchColumnMasks contains {"index": i, "viewExpression": {"expression": mask.expression}} if {
	input.action.operation == "GetColumnMask"
	some i, r in input.action.filterResources
	c := r.column
	c.catalogName == lh.catalog
	mask := lh.tables[c.schemaName][c.tableName].masks[c.columnName]
	principal
	not mask.clearance in principal.clearances
}

# encrypted personal data, for users cleared to see it: decrypted by the platform's function
batchColumnMasks contains {"index": i, "viewExpression": {"expression": mask.decrypt}} if {
	input.action.operation == "GetColumnMask"
	some i, r in input.action.filterResources
	c := r.column
	c.catalogName == lh.catalog
	mask := lh.tables[c.schemaName][c.tableName].masks[c.columnName]
	mask.clearance in principal.clearances
	mask.decrypt != null
}
