module pdm-operator.local/argo-notify

go 1.24.0

require (
	github.com/antonmedv/expr v1.8.9
	github.com/expr-lang/expr v1.17.8
)
