package registry

import (
	"github.com/labstack/echo/v4"
)

// Register adds the researchers' outcome endpoints under /registry.
func (r *Registry) Register(e *echo.Echo) {
	g := e.Group("/registry")
	_ = g
}
