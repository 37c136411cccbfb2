;; A probe component for the sandbox test: it asks WASI for its environment
;; variables, its arguments and its preopened directories, and returns how
;; many it got. Exported under the adapter interface name so the host's
;; GuestInstance (the real sandbox) instantiates and calls it.
(component
  (import "wasi:cli/environment@0.2.0" (instance $env
    (export "get-environment" (func (result (list (tuple string string)))))
    (export "get-arguments" (func (result (list string))))
  ))
  (import "wasi:filesystem/types@0.2.0" (instance $fs
    (export "descriptor" (type (sub resource)))
  ))
  (alias export $fs "descriptor" (type $descriptor))
  (import "wasi:filesystem/preopens@0.2.0" (instance $preopens
    (alias outer 1 $descriptor (type $d))
    (export "get-directories" (func (result (list (tuple (own $d) string)))))
  ))

  ;; Memory and a bump allocator, for the lowered results.
  (core module $heap
    (memory (export "memory") 1)
    (global $next (mut i32) (i32.const 1024))
    (func (export "realloc") (param i32 i32 i32 i32) (result i32)
      (local $at i32)
      (local.set $at (global.get $next))
      (global.set $next
        (i32.add (global.get $next) (i32.and (i32.add (local.get 3) (i32.const 7)) (i32.const -8))))
      (local.get $at))
  )
  (core instance $heap (instantiate $heap))
  (alias core export $heap "memory" (core memory $memory))
  (alias core export $heap "realloc" (core func $realloc))
  (core func $get-env (canon lower (func $env "get-environment") (memory $memory) (realloc $realloc)))
  (core func $get-args (canon lower (func $env "get-arguments") (memory $memory) (realloc $realloc)))
  (core func $get-dirs (canon lower (func $preopens "get-directories") (memory $memory) (realloc $realloc)))

  ;; Each call writes (pointer, length) of the list at 16; return the length.
  (core module $probe
    (import "host" "get-environment" (func $get-env (param i32)))
    (import "host" "get-arguments" (func $get-args (param i32)))
    (import "host" "get-directories" (func $get-dirs (param i32)))
    (import "host" "memory" (memory 1))
    (func (export "environment") (result i32) (call $get-env (i32.const 16)) (i32.load (i32.const 20)))
    (func (export "arguments") (result i32) (call $get-args (i32.const 16)) (i32.load (i32.const 20)))
    (func (export "preopens") (result i32) (call $get-dirs (i32.const 16)) (i32.load (i32.const 20)))
  )
  (core instance $probe (instantiate $probe (with "host" (instance
    (export "get-environment" (func $get-env))
    (export "get-arguments" (func $get-args))
    (export "get-directories" (func $get-dirs))
    (export "memory" (memory $memory))
  ))))
  (func $environment (result u32) (canon lift (core func $probe "environment")))
  (func $arguments (result u32) (canon lift (core func $probe "arguments")))
  (func $preopens (result u32) (canon lift (core func $probe "preopens")))
  (instance $adapter
    (export "environment" (func $environment))
    (export "arguments" (func $arguments))
    (export "preopens" (func $preopens)))
  (export "hermes:relay/adapter@0.1.0" (instance $adapter))
)
