// Package logging builds the zap loggers of a Basalt process and routes the
// logs of dragonboat (which has its own logger registry) into zap.
package logging
