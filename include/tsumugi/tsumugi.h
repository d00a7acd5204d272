#pragma once
/// Everything in tsumugi::core: tensors, autograd, ops, random numbers.
#include <tsumugi/core/autograd.h>
#include <tsumugi/core/device.h>
#include <tsumugi/core/dtype.h>
#include <tsumugi/core/error.h>
#include <tsumugi/core/ops.h>
#include <tsumugi/core/random.h>
#include <tsumugi/core/tensor.h>
#include <tsumugi/core/nn/layers.h>
#include <tsumugi/core/nn/module.h>
#include <tsumugi/core/nn/transformer.h>
#include <tsumugi/core/optim.h>
#include <tsumugi/core/safetensors.h>
#include <tsumugi/core/threads.h>
