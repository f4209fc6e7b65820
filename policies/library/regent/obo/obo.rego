# A service calling on behalf of a user (decision path `regent/obo/allow`).
#
# The calling service presents the user's token obtained by token exchange (RFC 8693): `sub` is the
# user, `act.sub` the service acting for them. Both parties are checked:
# - the service: `act.sub` must be the SPIFFE ID of the mTLS peer (so a token lifted by another
#   workload is useless) and one of the actors the route allows;
# - the user: the token (regent.jwt) carries the route's scope, and the user's attributes from the
#   directory in data.regent.obo.users allow this object: an employee reads their own review, a
#   manager reads the reviews of their department.
# A user's own token without `act`, sent by a service, is refused: services must not replay the
# tokens users gave them.
package regent.obo

import data.regent.jwt
import data.regent.paths

default allow := false

allow if {
	some route in matching_routes
	service_ok(route)
	user_ok(route)
}

matching_routes contains r if {
	some r in data.regent.obo.routes
	input.attributes.request.http.method in r.methods
	paths.match(r.path, input.parsed_path)
}

actor := jwt.claims.act.sub

user := data.regent.obo.users[jwt.claims.sub]

service_ok(route) if {
	actor == input.attributes.source.principal
	actor in route.actors
}

user_ok(route) if {
	route.scope in jwt.scopes
	review_readable
}

review := data.regent.obo.reviews[input.parsed_path[2]]

review_readable if review.employee == jwt.claims.sub

review_readable if {
	user.manager == true
	user.department == review.department
}

# Why a request was denied, for the decision log (undefined when allowed).
reason := "invalid_token" if {
	not jwt.valid
} else := "no_actor" if {
	not allow
	not actor
} else := "actor_is_not_the_caller" if {
	not allow
	actor != input.attributes.source.principal
} else := "actor_not_allowed" if {
	not allow
	some route in matching_routes
	not actor in route.actors
} else := "denied_for_user" if {
	not allow
}
