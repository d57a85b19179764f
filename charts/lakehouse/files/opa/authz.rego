package system.authz

import rego.v1

default allow := false

decisions := [["v1", "data", "lakehouse", "trino", "allow"], ["v1", "data", "lakehouse", "trino", "batch"], ["v1", "data", "lakehouse", "trino", "batchColumnMasks"], ["v1", "data", "lakehouse", "trino", "rowFilters"]]

allow if {
	input.identity == "CN=trino"
	input.method == "POST"
	input.path in decisions
}
