package logging

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/lni/dragonboat/v4/logger"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// New returns a production zap logger at level ("debug", "info", "warn",
// "error") writing JSON to stderr, as etcd does.
func New(level string) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("logging: %w", err)
	}
	cfg := zap.NewProductionConfig()
	cfg.Level = zap.NewAtomicLevelAt(lvl)
	cfg.Sampling = nil
	cfg.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	return cfg.Build()
}

var (
	routeOnce sync.Once
	dbLogger  atomic.Pointer[zap.Logger]
)

// RouteDragonboat sends dragonboat's logs to lg. Dragonboat logs routine
// Raft events (elections) as warnings; they arrive as info, its errors as
// warnings, and its debug and info chatter is dropped. Dragonboat's logger registry is global
// to the process: the latest logger wins, which matters only when several
// nodes share a process (tests).
func RouteDragonboat(lg *zap.Logger) {
	dbLogger.Store(lg)
	routeOnce.Do(func() {
		logger.SetLoggerFactory(func(pkg string) logger.ILogger {
			return &dragonboatLogger{pkg: pkg}
		})
	})
}

type dragonboatLogger struct{ pkg string }

func (l *dragonboatLogger) log() *zap.SugaredLogger {
	lg := dbLogger.Load()
	if lg == nil {
		lg = zap.NewNop()
	}
	return lg.Sugar().With("pkg", "dragonboat/"+l.pkg)
}

func (l *dragonboatLogger) SetLevel(logger.LogLevel)    {}
func (l *dragonboatLogger) Debugf(string, ...any)       {}
func (l *dragonboatLogger) Infof(string, ...any)        {}
func (l *dragonboatLogger) Warningf(f string, a ...any) { l.log().Infof(f, a...) }
func (l *dragonboatLogger) Errorf(f string, a ...any)   { l.log().Warnf(f, a...) }
func (l *dragonboatLogger) Panicf(f string, a ...any)   { l.log().Panicf(f, a...) }
